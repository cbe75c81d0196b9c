"""The Python API: load a chat model once, then stream answers from any thread or asyncio task.

``ChatModel`` is a small facade over a ``LoadedModel`` (client/loaded_model.py): the input processor turns each
call into engine requests (templates, defaults, seeds, answer length: inputs/processor.py), and the engine client
streams them (client/engine_client.py). Every stream goes through one shared engine, so concurrent callers are
decoded together as one batch. ``embed`` and ``rerank`` use the same engine for the model's other outputs.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from qwen_stream.client.loaded_model import BACKENDS, LoadedModel, load_model
from qwen_stream.client.streams import AsyncRequestStream, RequestStream
from qwen_stream.client.vectors import Ranked
from qwen_stream.engine.backend import EngineBackend
from qwen_stream.engine.config import EngineConfig
from qwen_stream.engine.runners.base import ModelRunner
from qwen_stream.errors import EngineError
from qwen_stream.inputs.chat_template import history_pairs, make_messages
from qwen_stream.inputs.request import EngineRequest
from qwen_stream.types import FinishReason, SamplingParams, StreamEvent, ToolCall

if TYPE_CHECKING:
    import numpy as np

    from qwen_stream.engine.vllm.mapping import VllmOptions
    from qwen_stream.inputs.grammars import Grammars

__all__ = ["BACKENDS", "Answer", "ChatModel"]

History = Sequence[Any] | None  # (query, response) pairs or OpenAI-style messages


class Answer(str):
    """What ``ChatModel.chat`` returns: the answer's text, with its reasoning and tool calls alongside.

    It is a ``str`` (the content), so code written for plain answers keeps working.
    """

    reasoning: str
    tool_calls: list[ToolCall]
    finish_reason: FinishReason | None

    @classmethod
    def from_event(cls, event: StreamEvent) -> Answer:
        answer = cls(event.text)
        answer.reasoning = event.reasoning
        answer.tool_calls = list(event.tool_calls)
        answer.finish_reason = event.finish_reason
        return answer

    def message(self) -> dict[str, Any]:
        """The answer as an OpenAI-style assistant message, to append to ``messages`` for the next turn
        (reasoning left out, as Qwen3's template leaves out earlier turns' reasoning)."""
        message: dict[str, Any] = {"role": "assistant", "content": str(self)}
        if self.tool_calls:
            message["tool_calls"] = [{"id": c.id, "type": "function",
                                      "function": {"name": c.name, "arguments": c.arguments}}
                                     for c in self.tool_calls]
        return message


class ChatModel:
    """A loaded model: its input processor (``model.inputs``) and engine client (``model.client``)."""

    def __init__(self, loaded: LoadedModel) -> None:
        self.loaded = loaded
        self.inputs = loaded.inputs
        self.client = loaded.client

    @classmethod
    def load(cls, model: str | None = None, config: EngineConfig | None = None, *, progress: bool = True,
             system: str | None = None, backend: str = "native", vllm_options: VllmOptions | None = None,
             tool_parser: str | None = None, **options: Any) -> ChatModel:
        """Load a built-in alias, a local HF directory, a .gguf file or a hub id (default: the default alias).

        ``config`` (an ``EngineConfig``) says how the engine runs it; ``options`` change single fields of it
        (``ChatModel.load(path, runner="torch", max_batch_size=4)``), see engine/config.py for each. Among them:
        ``quantize="int8"``: the PyTorch runner with int8 weights (CPU, float32 activations; approximate).
        ``prefix_cache``: a finished request's KV stays in its slot, and a later prompt that starts the same way
        (the next turn of a conversation) prefills only what is new; ``cache_reuse``: past that prefix, cached runs
        of at least this many tokens move into place (llama.cpp runner, docs/fim.md; 0: off). ``speculate``: draft up to ``draft_max``
        tokens per step from the prompt and answer so far and check them in the step's one forward (the greedy
        text, up to llama.cpp's chunk-size-dependent kernels: docs/speculation.md; faster on answers that repeat
        their prompt; see engine/spec/drafting.py). ``kv_budget``: on the llama.cpp
        runner, KV cells (tokens) shared by all slots, idle slots' cached prefixes evicted first (default:
        ``kv_windows`` context windows); ``kv_type="q8_0"``: an 8-bit KV cache there.
        ``backend="vllm"``: vLLM's engine instead of ours (many GPUs and hosts: ``vllm_options``); needs the vllm
        package (see docs/vllm.md). ``draft_model``: also draft up to ``draft_model_max`` tokens per step with
        this smaller model of the same tokenizer (an alias such as qwen2.5-coder-0.5b or a .gguf file; llama.cpp
        runner only), where lookup finds nothing and the measured cost pays (see docs/speculation.md).
        ``system``: the system prompt of conversations that give none; ``tool_parser``: how the model writes tool
        calls ("hermes" or "qwen3_coder"; default: read from its chat template)."""
        config = (config or EngineConfig()).with_(**options)
        return cls(load_model(model, config, backend=backend, vllm_options=vllm_options, system=system,
                              tool_parser=tool_parser, progress=progress))

    # ---- what the model is -----------------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.inputs.name

    @property
    def tokenizer(self) -> Any:
        return self.inputs.tokenizer

    @property
    def engine(self) -> EngineBackend:
        return self.client.engine

    @property
    def context_length(self) -> int:
        return self.inputs.context_length

    @property
    def default_params(self) -> SamplingParams:
        return self.inputs.default_params

    @property
    def grammars(self) -> Grammars:
        return self.inputs.grammars

    @property
    def runner(self) -> ModelRunner | None:
        """The ModelRunner our step-loop engine drives (None on a backend without one)."""
        return getattr(self.engine, "runner", None)

    def sampling_params(self, params: SamplingParams | None = None, **overrides: Any) -> SamplingParams:
        """Validated parameters: the model's defaults, then ``params``, then keyword overrides (None = keep)."""
        return self.inputs.params(params, **overrides)

    # ---- streaming ------------------------------------------------------------------------------------------

    def stream(self, query: str | None = None, history: History = None, *, messages: Sequence[Any] | None = None,
               system: str | None = None, params: SamplingParams | None = None, **overrides: Any) -> RequestStream:
        """Stream the answer to ``query`` after ``history`` as StreamEvents (``event.delta`` is the new text).

        Chat options besides sampling fields: ``tools`` (OpenAI function specs, or bare ``{"name", "parameters"}``
        dicts), ``tool_choice`` ("auto", "none", "required" or a function), ``parallel_tool_calls``,
        ``thinking`` (Qwen3's ``enable_thinking``) and ``chat_template_kwargs``. Events then carry
        ``tool_call_deltas``/``tool_calls`` and ``reasoning_delta``/``reasoning`` besides the content.
        """
        return self.client.stream(self._chat(query, history, messages, system, params, overrides)[0])

    def astream(self, query: str | None = None, history: History = None, *, messages: Sequence[Any] | None = None,
                system: str | None = None, params: SamplingParams | None = None,
                **overrides: Any) -> AsyncRequestStream:
        """As ``stream``, for asyncio: call it inside a running event loop."""
        return self.client.astream(self._chat(query, history, messages, system, params, overrides)[0])

    def complete_stream(self, prompt: str | Sequence[int], *, params: SamplingParams | None = None,
                        **overrides: Any) -> RequestStream:
        """Continue raw text or token ids (no chat template), as /v1/completions does."""
        return self.client.stream(self.inputs.completion([prompt], params=params, **overrides)[0])

    def acomplete_stream(self, prompt: str | Sequence[int], *, params: SamplingParams | None = None,
                         **overrides: Any) -> AsyncRequestStream:
        return self.client.astream(self.inputs.completion([prompt], params=params, **overrides)[0])

    def chat_stream(self, query: str, history: History = None, system: str | None = None,
                    **overrides: Any) -> Iterator[str]:
        """The seed's interface: yields the growing answer (cumulative text), as Qwen-7B-Chat's chat_stream."""
        stream = self.stream(query, history, system=system, **overrides)
        try:
            for event in stream:
                if event.delta or event.finished:
                    yield event.text
        finally:
            stream.close()  # break / close() / Ctrl-C in the caller stops the computation

    def chat(self, query: str | None = None, history: History = None, system: str | None = None, *,
             messages: Sequence[Any] | None = None, **overrides: Any) -> tuple[Answer, list[tuple[str, str]]]:
        """The whole answer at once, and the history with this turn appended as a (query, response) pair.

        The answer is a ``str`` with ``.tool_calls``, ``.reasoning``, ``.finish_reason`` and ``.message()`` (the
        assistant message to append to ``messages`` in a tool loop); ``stream`` lists the options.
        """
        event = self.stream(query, history, messages=messages, system=system, **overrides).collect()
        answer = Answer.from_event(event)
        pairs = history_pairs(messages if messages is not None else history)
        if query is not None:
            pairs.append((query, str(answer)))
        return answer, pairs

    def choices(self, query: str | None = None, history: History = None, *, n: int, system: str | None = None,
                messages: Sequence[Any] | None = None, **overrides: Any) -> list[Answer]:
        """``n`` answers to the same conversation, sampled together (choice i with seed + i, so a given seed gives
        the same ``n`` answers every time), as OpenAI's ``n``."""
        requests = self._chat(query, history, messages, system, None, overrides, n=n)
        finals = self.client.batch(requests, progress=False)
        if any(e is None for e in finals):
            raise EngineError("a choice was cancelled before it finished")
        return [Answer.from_event(e) for e in finals if e is not None]

    # ---- offline batches ------------------------------------------------------------------------------------

    def chat_batch(self, queries: Sequence[str], *, system: str | None = None, progress: bool = True,
                   **overrides: Any) -> list[str]:
        """Answer many independent queries, batched as tightly as the engine allows."""
        requests = [r for q in queries for r in self._chat(q, None, None, system, None, dict(overrides))]
        return _texts(self.client.batch(requests, progress=progress))

    def batch(self, prompts: Sequence[str], *, chat: bool = True, progress: bool = True,
              **overrides: Any) -> list[str]:
        """Many prompts at once: chat queries by default, raw completions with ``chat=False``."""
        if chat:
            return self.chat_batch(prompts, progress=progress, **overrides)
        requests = [r for p in prompts for r in self.inputs.completion([p], **overrides)]
        return _texts(self.client.batch(requests, progress=progress))

    def embed(self, texts: str | Sequence[str] | Sequence[Sequence[int]], *, input_type: str | None = None,
              truncate: bool = False, dimensions: int | None = None, pooling: str | None = None,
              normalize: bool | None = None) -> np.ndarray:
        """One vector per text, float32 [len(texts), width] (one text: a single row), pooled as the model says
        (an embedding model's own pooling; a chat model's last token, normalised) unless ``pooling`` /
        ``normalize`` say otherwise. ``input_type`` "query" or "document": the model's prompt for it (Qwen3-Embedding
        instructs queries). ``truncate``: cut a text longer than the window instead of refusing it; ``dimensions``:
        keep the first n of each vector, re-normalised. Texts run batched on the engine, beside any streams."""
        job = self.inputs.embed(texts, input_type=input_type, truncate=truncate, dimensions=dimensions,
                                pooling=pooling, normalize=normalize)
        return self.client.embed(job).vectors

    def rerank(self, query: str, documents: Sequence[str], *, top_n: int | None = None,
               instruction: str | None = None) -> list[Ranked]:
        """``documents`` ranked for ``query``, best first (``top_n`` of them): ``Ranked(index, score)``. An
        embedding model scores by cosine; a chat model by P("yes") of Qwen3-Reranker's judging prompt
        (``instruction``: its task line)."""
        return self.client.rank(self.inputs.rerank(query, documents, top_n=top_n, instruction=instruction)).results

    def _chat(self, query: str | None, history: History, messages: Sequence[Any] | None, system: str | None,
              params: SamplingParams | None, overrides: dict[str, Any], n: int = 1) -> list[EngineRequest]:
        turns = make_messages(query, messages if messages is not None else history, system=system)
        return self.inputs.chat(turns, params=params, n=n, **overrides)

    def close(self) -> None:
        self.loaded.close()

    def __enter__(self) -> ChatModel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def _texts(finals: list[StreamEvent | None]) -> list[str]:
    """Each answer's text ("" for one cancelled before it finished)."""
    return [e.text if e is not None else "" for e in finals]
