"""The Python API: load a chat model once, then stream answers from any thread or asyncio task.

Every stream goes through one shared engine (an EngineBackend, see engine/backend.py), so concurrent callers are
decoded together as one batch.
"""

from __future__ import annotations

import logging
import queue
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import torch

from qwen_stream.client.consumer import RequestConsumer
from qwen_stream.client.streams import AsyncRequestStream, PromptInfo, RequestStream
from qwen_stream.engine.backend import EngineBackend
from qwen_stream.engine.config import EngineConfig
from qwen_stream.engine.loop import Engine
from qwen_stream.engine.runners.base import ModelRunner
from qwen_stream.engine.spec.drafting import SpeculationConfig
from qwen_stream.inputs.chat_template import ChatPrompter, history_pairs, make_messages
from qwen_stream.inputs.fim import FimPrompter, NoFimError
from qwen_stream.inputs.grammars import Grammars
from qwen_stream.inputs.tools import ToolRequest
from qwen_stream.output.message import MessageParser, make_tool_parser, parser_for_template, template_thinks
from qwen_stream.output.processor import OutputProcessor
from qwen_stream.output.reasoning import ReasoningParser, prompt_opens_reasoning
from qwen_stream.types import FinishReason, SamplingParams, StreamEvent, TokenOutput, ToolCall

if TYPE_CHECKING:
    from qwen_stream.engine.vllm.mapping import VllmOptions

logger = logging.getLogger(__name__)

BACKENDS = ("native", "vllm")  # our step-loop engine, or vLLM's (engine/vllm/backend.py)

History = Sequence[Any] | None  # (query, response) pairs or OpenAI-style messages


@dataclass(slots=True, frozen=True)
class _Prepared:
    prompt_ids: list[int]
    params: SamplingParams
    info: PromptInfo
    prompt_text: str = ""  # set for chat prompts (rendered by the template), "" for raw completions
    tools: ToolRequest | None = None


PreparedRequest = _Prepared  # what prepare_chat/prepare_completion return (the server prepares off its loop)


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
    """A loaded model with its tokenizer, chat template and engine."""

    def __init__(self, *, name: str, tokenizer: Any, engine: EngineBackend, default_params: SamplingParams,
                 eos_token_ids: Sequence[int] = (), default_system: str | None = None) -> None:
        self.name = name
        self.tokenizer = tokenizer
        self.engine = engine
        self.default_params = default_params
        self.eos_token_ids = tuple(eos_token_ids)
        self.context_length = self.engine.max_model_len
        if default_params.max_new_tokens > self.context_length // 2:
            # a model's default (e.g. 512) must not by itself leave no room for the prompt
            self.default_params = default_params.with_(max_new_tokens=max(1, self.context_length // 2))
        self.prompter = ChatPrompter(tokenizer, default_system=default_system)
        self.grammars = Grammars(tokenizer, vocab_size=engine.vocab_size, stop_token_ids=self.eos_token_ids)
        # The tool-call format: None reads it from the chat template; "hermes" or "qwen3_coder" forces one.
        self.tool_parser: str | None = None
        self._max_token_chars: int | None = None  # the longest token's length, for the cheap too-long check
        self._fim: FimPrompter | NoFimError | None = None  # made on first use: see fim_prompter

    @classmethod
    def load(cls, model: str | None = None, config: EngineConfig | None = None, *, progress: bool = True,
             system: str | None = None, backend: str = "native", vllm_options: VllmOptions | None = None,
             **options: Any) -> ChatModel:
        """Load a built-in alias, a local HF directory, a .gguf file or a hub id (default: the default alias).

        ``config`` (an ``EngineConfig``) says how the engine runs it; ``options`` change single fields of it
        (``ChatModel.load(path, runner="torch", max_batch_size=4)``), see engine/config.py for each. Among them:
        ``quantize="int8"``: the PyTorch runner with int8 weights (CPU, float32 activations; approximate).
        ``prefix_cache``: a finished request's KV stays in its slot, and a later prompt that starts the same way
        (the next turn of a conversation) prefills only what is new. ``speculate``: draft up to ``draft_max``
        tokens per step from the prompt and answer so far and check them in the step's one forward (the greedy
        text, up to llama.cpp's chunk-size-dependent kernels: docs/speculation.md; faster on answers that repeat
        their prompt; see engine/spec/drafting.py). ``kv_budget``: on the llama.cpp
        runner, KV cells (tokens) shared by all slots, idle slots' cached prefixes evicted first (default:
        ``kv_windows`` context windows); ``kv_type="q8_0"``: an 8-bit KV cache there.
        ``backend="vllm"``: vLLM's engine instead of ours (many GPUs and hosts: ``vllm_options``); needs the vllm
        package (see docs/vllm.md). ``draft_model``: also draft up to ``draft_model_max`` tokens per step with
        this smaller model of the same tokenizer (an alias such as qwen2.5-coder-0.5b or a .gguf file; llama.cpp
        runner only), where lookup finds nothing and the measured cost pays (see docs/speculation.md)."""
        config = (config or EngineConfig()).with_(**options)
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
        if config.draft_model is not None and backend != "native":
            raise ValueError("a draft model drafts for the native engine's speculation on the llama.cpp runner: it "
                             "needs backend native")
        if backend == "vllm":
            return cls._load_vllm(model, config, progress=progress, system=system, options=vllm_options)
        if vllm_options is not None:
            raise ValueError("vllm_options apply to backend='vllm'")
        from qwen_stream.client.loaded_model import load_components

        parts = load_components(model, config, progress=progress)
        speculation = (SpeculationConfig(max_draft=config.draft_max, model_max_draft=config.draft_model_max)
                       if config.speculate else None)
        engine = Engine(parts.runner, eos_token_ids=parts.eos_token_ids, max_running=config.max_batch_size,
                        max_waiting=config.max_waiting, max_model_len=parts.context_length,
                        reuse_prefix=config.prefix_cache, speculate=speculation, drafter=parts.drafter)
        logger.info("%s runs on %s (context %d tokens, %d slots)", parts.name, engine.name, engine.max_model_len,
                    engine.max_running)
        return cls(name=parts.name, tokenizer=parts.tokenizer, engine=engine, default_params=parts.default_params,
                   eos_token_ids=parts.eos_token_ids, default_system=system)

    @classmethod
    def _load_vllm(cls, model: str | None, config: EngineConfig, *, progress: bool, system: str | None,
                   options: VllmOptions | None) -> ChatModel:
        from qwen_stream.client.loaded_model import load_vllm_components

        if config.runner != "auto":
            raise ValueError("--runner chooses what runs under the native engine; with backend vllm, vLLM runs the "
                             "model itself")
        if config.quantize is not None:
            raise ValueError("--quantize int8 is the native PyTorch runner's; vLLM takes --quantization "
                             "(gptq, awq, fp8, ...)")
        if config.kv_budget is not None or config.kv_type is not None:
            raise ValueError("--kv-budget and --kv-type size the native engine's KV pool; vLLM sizes its own "
                             "(--engine-arg kv_cache_memory_bytes=..., --engine-arg kv_cache_dtype=fp8)")
        parts = load_vllm_components(model, options=options, dtype=config.dtype, max_running=config.max_batch_size,
                                     max_waiting=config.max_waiting, context_length=config.context_length,
                                     prefix_cache=config.prefix_cache, progress=progress)
        return cls(name=parts.name, tokenizer=parts.tokenizer, engine=parts.engine,
                   default_params=parts.default_params, eos_token_ids=parts.eos_token_ids, default_system=system)

    @property
    def runner(self) -> ModelRunner | None:
        """The ModelRunner our step-loop engine drives (None on a backend without one)."""
        return getattr(self.engine, "runner", None)

    # ---- parameters and prompts -----------------------------------------------------------------------------

    def fim_prompter(self) -> FimPrompter:
        """The model's fill-in-the-middle prompt builder, made on first use (it copies the tokenizer's backend);
        NoFimError when the model has no FIM tokens. Blocking: servers call it off the event loop."""
        if self._fim is None:
            try:
                self._fim = FimPrompter(self.tokenizer, self.name)
            except NoFimError as exc:
                self._fim = exc
        if isinstance(self._fim, NoFimError):
            raise self._fim
        return self._fim

    def sampling_params(self, params: SamplingParams | None = None, **overrides: Any) -> SamplingParams:
        """Validated parameters: the model's defaults, then ``params``, then keyword overrides (None = keep)."""
        base = params or self.default_params
        changes = {k: v for k, v in self._constrain(overrides).items() if v is not None}
        unknown = set(changes) - set(SamplingParams.__dataclass_fields__)
        if unknown:
            raise TypeError(f"unknown sampling parameter(s): {', '.join(sorted(unknown))}")
        return base.with_(**changes) if changes else base

    def _constrain(self, overrides: dict[str, Any]) -> dict[str, Any]:
        """``response_format=`` (OpenAI's) or ``json_schema=`` become a compiled ``constraint`` (GrammarError: 400)."""
        response_format = overrides.pop("response_format", None)
        schema = overrides.pop("json_schema", None)
        if response_format is not None and schema is not None:
            raise ValueError("give response_format or json_schema, not both")
        if schema is not None:
            overrides["constraint"] = self.grammars.json_schema(schema)
        elif response_format is not None:
            overrides["constraint"] = self.grammars.response_format(response_format)
        return overrides

    def _seeded(self, params: SamplingParams) -> SamplingParams:
        # Without an explicit seed, draw one from torch's global RNG so transformers' set_seed() (as the seed
        # demos call it) makes the next answer reproducible.
        if params.seed is not None or params.greedy:
            return params
        return params.with_(seed=int(torch.randint(0, 2**62, (1,)).item()))

    def prepare_chat(self, messages: Sequence[Any], *, params: SamplingParams | None = None,
                     open_ended: bool = False, **options: Any) -> _Prepared:
        """Template, tokenize and fold a conversation (CPU work: the server runs it off its event loop).

        ``options``: the chat options of ``stream`` (tools, thinking...). ``open_ended``: the request gave no answer
        length, so ``params.max_new_tokens`` is only a cap and the answer may take the rest of the context window,
        as OpenAI and vLLM do. Stream it with ``astream_prepared``."""
        return self._prepare_chat(None, None, messages, None, params, dict(options), open_ended=open_ended)

    def prepare_completion(self, prompt: str | Sequence[int], *, params: SamplingParams | None = None,
                           open_ended: bool = False) -> _Prepared:
        """Tokenize a raw prompt (no template); ``open_ended`` as for ``prepare_chat``. Stream it with
        ``acomplete_prepared``."""
        return self._prepare_completion(prompt, params, {}, open_ended=open_ended)

    def astream_prepared(self, prepared: _Prepared) -> AsyncRequestStream:
        """Start streaming a conversation made by ``prepare_chat`` (inside an event loop)."""
        p = prepared
        return AsyncRequestStream(self.engine, p.prompt_ids, p.params, self._chat_processor(p), p.info)

    def acomplete_prepared(self, prepared: _Prepared) -> AsyncRequestStream:
        """Start streaming a raw prompt made by ``prepare_completion`` (inside an event loop)."""
        p = prepared
        return AsyncRequestStream(self.engine, p.prompt_ids, p.params, self._processor(p.params), p.info)

    def _prepare_chat(self, query: str | None, history: History, messages: Sequence[Any] | None,
                      system: str | None, params: SamplingParams | None, overrides: dict[str, Any],
                      open_ended: bool = False) -> _Prepared:
        """``overrides`` holds sampling fields and the chat options: tools, tool_choice, parallel_tool_calls,
        thinking, chat_template_kwargs."""
        options = {k: overrides.pop(k) for k in _CHAT_OPTIONS if k in overrides}
        tools = ToolRequest.create(options.get("tools"), options.get("tool_choice"),
                                   options.get("parallel_tool_calls"))
        if tools.active:
            self.prompter.require_tools()
            self._tool_parser_name()  # fail before any work when the format is unknown
        template_kwargs = dict(options.get("chat_template_kwargs") or {})
        if options.get("thinking") is not None:
            template_kwargs["enable_thinking"] = bool(options["thinking"])
        if tools.must_call:
            if any(overrides.get(k) is not None for k in ("constraint", "response_format", "json_schema")):
                raise ValueError("tool_choice that forces a call cannot be combined with response_format")
            overrides["constraint"] = self._tool_constraint(tools, template_kwargs)
        chosen = self._seeded(self.sampling_params(params, **overrides))
        self._check_logit_bias(chosen)
        turns = make_messages(query, messages if messages is not None else history, system=system)
        if turns[-1]["role"] not in ("user", "tool"):
            raise ValueError("nothing to answer: give a query, or messages ending with a user message (or tool results)")
        self._check_chars(str(turns[-1].get("content") or ""), "the last message")
        build = partial(self.prompter.build, turns, tools=tools.tools if tools.active else None,
                        template_kwargs=template_kwargs)
        if open_ended:
            prompt, chosen = self._build_open_ended(build, chosen)
        else:
            prompt = build(max_prompt_tokens=self._prompt_budget(chosen))
        return _Prepared(prompt.ids, chosen, PromptInfo(len(prompt.ids), prompt.dropped_turns), prompt.text,
                         tools if tools.active else None)

    def _build_open_ended(self, build: Callable[..., Any], chosen: SamplingParams) -> tuple[Any, SamplingParams]:
        """Fold history to leave the model's usual answer room; a last message that alone leaves less gets the
        rest of the window. Then the answer may run to the window's end (at most ``chosen.max_new_tokens``)."""
        reserve = max(1, min(chosen.max_new_tokens, self.default_params.max_new_tokens, self.context_length - 1))
        try:
            prompt = build(max_prompt_tokens=self.context_length - reserve)
        except ValueError:
            prompt = build(max_prompt_tokens=self.context_length - 1)
        room = self.context_length - len(prompt.ids)
        return prompt, chosen.with_(max_new_tokens=max(1, min(chosen.max_new_tokens, room)))

    def _check_chars(self, text: str, what: str) -> None:
        """Refuse text too long for the window before tokenizing it: no token covers more characters than the
        longest token's bytes, so past (window x that) characters it cannot fit, whatever its tokens."""
        if self._max_token_chars is None:
            from qwen_stream.output.detokenizer import token_bytes_table

            self._max_token_chars = max(1, max(len(b) for b in token_bytes_table(self.tokenizer).with_special))
        limit = self.context_length * self._max_token_chars
        if len(text) > limit:
            raise ValueError(f"{what} is too long for the context window: {len(text)} characters, and "
                             f"{self.context_length} tokens hold at most {limit}")

    def _tool_constraint(self, tools: ToolRequest, template_kwargs: dict[str, Any]) -> Any:
        """The grammar that makes ``tool_choice`` "required" or a named function a fact, not a hope: the model
        can only write calls (in its own format) to the given functions with arguments valid for them."""
        choice: Any = {"type": "function", "function": {"name": tools.choice}} if tools.forced_name else tools.choice
        thinks = template_thinks(self.prompter.template_text) and template_kwargs.get("enable_thinking") is not False
        return self.grammars.tool_calls(list(tools.tools), choice, parallel_tool_calls=tools.parallel,
                                        call_format=self._tool_parser_name(), reasoning=thinks)

    def _check_logit_bias(self, params: SamplingParams) -> None:
        vocab = self.engine.vocab_size
        if isinstance(vocab, int) and any(token_id >= vocab for token_id, _ in params.logit_bias):
            raise ValueError(f"logit_bias names token ids past this model's vocabulary of {vocab}")

    def _tool_parser_name(self) -> str:
        name = self.tool_parser or parser_for_template(self.prompter.template_text)
        if name is None:
            raise ValueError("cannot tell from this model's chat template how it writes tool calls: choose a "
                             "tool parser (--tool-parser hermes or qwen3_coder)")
        return name

    def _message_parser(self, prepared: _Prepared) -> MessageParser | None:
        """Reasoning split when the template knows <think>; tool calls read when the request has tools."""
        reasoning = None
        if template_thinks(self.prompter.template_text):
            reasoning = ReasoningParser(starts_in_reasoning=prompt_opens_reasoning(prepared.prompt_text))
        tools = None
        if prepared.tools is not None:
            tools = make_tool_parser(self._tool_parser_name(), prepared.tools.tools,
                                     max_calls=None if prepared.tools.parallel else 1)
        if reasoning is None and tools is None:
            return None
        return MessageParser(reasoning=reasoning, tools=tools)

    def _prepare_completion(self, prompt: str | Sequence[int], params: SamplingParams | None,
                            overrides: dict[str, Any], open_ended: bool = False) -> _Prepared:
        chosen = self._seeded(self.sampling_params(params, **overrides))
        self._check_logit_bias(chosen)
        if isinstance(prompt, str):
            self._check_chars(prompt, "the prompt")
            ids = self.tokenizer.encode(prompt, add_special_tokens=False)
        elif all(isinstance(t, int) for t in prompt):
            ids = list(prompt)
        else:
            raise TypeError("prompt must be a string or a list of token ids")
        if not ids:
            raise ValueError("the prompt is empty")
        if open_ended and len(ids) < self.context_length:
            chosen = chosen.with_(max_new_tokens=min(chosen.max_new_tokens, self.context_length - len(ids)))
        budget = self._prompt_budget(chosen)
        if len(ids) > budget:
            raise ValueError(f"the prompt has {len(ids)} tokens; with max_new_tokens={chosen.max_new_tokens} "
                             f"at most {budget} fit the context window of {self.context_length}")
        return _Prepared(ids, chosen, PromptInfo(len(ids)))

    def _prompt_budget(self, params: SamplingParams) -> int:
        if params.max_new_tokens >= self.context_length:
            raise ValueError(f"max_new_tokens={params.max_new_tokens} does not fit the context window of "
                             f"{self.context_length} tokens")
        return self.context_length - params.max_new_tokens

    def _processor(self, params: SamplingParams, parser: MessageParser | None = None) -> OutputProcessor:
        return OutputProcessor(self.tokenizer, params, start_time=time.perf_counter(), parser=parser)

    def _chat_processor(self, prepared: _Prepared) -> OutputProcessor:
        return self._processor(prepared.params, self._message_parser(prepared))

    # ---- streaming ------------------------------------------------------------------------------------------

    def stream(self, query: str | None = None, history: History = None, *, messages: Sequence[Any] | None = None,
               system: str | None = None, params: SamplingParams | None = None, **overrides: Any) -> RequestStream:
        """Stream the answer to ``query`` after ``history`` as StreamEvents (``event.delta`` is the new text).

        Chat options besides sampling fields: ``tools`` (OpenAI function specs, or bare ``{"name", "parameters"}``
        dicts), ``tool_choice`` ("auto", "none", "required" or a function), ``parallel_tool_calls``,
        ``thinking`` (Qwen3's ``enable_thinking``) and ``chat_template_kwargs``. Events then carry
        ``tool_call_deltas``/``tool_calls`` and ``reasoning_delta``/``reasoning`` besides the content.
        """
        p = self._prepare_chat(query, history, messages, system, params, overrides)
        return RequestStream(self.engine, p.prompt_ids, p.params, self._chat_processor(p), p.info)

    def astream(self, query: str | None = None, history: History = None, *, messages: Sequence[Any] | None = None,
                system: str | None = None, params: SamplingParams | None = None,
                **overrides: Any) -> AsyncRequestStream:
        """As ``stream``, for asyncio: call it inside a running event loop."""
        p = self._prepare_chat(query, history, messages, system, params, overrides)
        return AsyncRequestStream(self.engine, p.prompt_ids, p.params, self._chat_processor(p), p.info)

    def complete_stream(self, prompt: str | Sequence[int], *, params: SamplingParams | None = None,
                        **overrides: Any) -> RequestStream:
        """Continue raw text (no chat template), as /v1/completions does."""
        p = self._prepare_completion(prompt, params, overrides)
        return RequestStream(self.engine, p.prompt_ids, p.params, self._processor(p.params), p.info)

    def acomplete_stream(self, prompt: str | Sequence[int], *, params: SamplingParams | None = None,
                         **overrides: Any) -> AsyncRequestStream:
        p = self._prepare_completion(prompt, params, overrides)
        return AsyncRequestStream(self.engine, p.prompt_ids, p.params, self._processor(p.params), p.info)

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

    # ---- offline batches ------------------------------------------------------------------------------------

    def chat_batch(self, queries: Sequence[str], *, system: str | None = None, progress: bool = True,
                   **overrides: Any) -> list[str]:
        """Answer many independent queries, batched as tightly as the engine allows."""
        prepared = [self._prepare_chat(q, None, None, system, None, dict(overrides)) for q in queries]
        return self._run_batch(prepared, progress)

    def batch(self, prompts: Sequence[str], *, chat: bool = True, progress: bool = True,
              **overrides: Any) -> list[str]:
        """Many prompts at once: chat queries by default, raw completions with ``chat=False``."""
        if chat:
            return self.chat_batch(prompts, progress=progress, **overrides)
        prepared = [self._prepare_completion(p, None, overrides) for p in prompts]
        return self._run_batch(prepared, progress)

    def _run_batch(self, prepared: list[_Prepared], progress: bool) -> list[str]:
        from tqdm.auto import tqdm

        outputs: queue.SimpleQueue[tuple[int, TokenOutput]] = queue.SimpleQueue()
        consumers = [RequestConsumer(self.engine, self._chat_processor(p) if p.prompt_text else self._processor(p.params)) for p in prepared]
        capacity = self.engine.max_running + self.engine.max_waiting
        submitted = done = 0
        try:
            with tqdm(total=len(prepared), desc="batch", unit="answer", disable=not progress) as bar:
                while done < len(prepared):
                    while submitted < len(prepared) and submitted - done < capacity:
                        item = prepared[submitted]
                        consumers[submitted].submit(item.prompt_ids, item.params, _indexed_sink(outputs, submitted))
                        submitted += 1
                    i, out = outputs.get()
                    if consumers[i].finished:
                        continue  # outputs still queued after a stop string ended this answer
                    if consumers[i].process(out).finished:
                        done += 1
                        bar.update(1)
        finally:
            for consumer in consumers:  # an error or Ctrl-C: stop the answers still running
                consumer.cancel()
        return [c.final.text if c.final is not None else "" for c in consumers]

    def close(self) -> None:
        self.engine.shutdown()

    def __enter__(self) -> ChatModel:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


_CHAT_OPTIONS = ("tools", "tool_choice", "parallel_tool_calls", "thinking", "chat_template_kwargs")


def _indexed_sink(into: queue.SimpleQueue[tuple[int, TokenOutput]], index: int) -> Callable[[TokenOutput], None]:
    def sink(out: TokenOutput) -> None:
        into.put((index, out))

    return sink
