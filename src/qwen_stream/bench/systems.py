"""The systems a benchmark compares. Each serves one request per ``serve`` call and records what its client saw.

- ``ours-llamacpp`` / ``ours-torch`` / ``ours-torch-int8``: our engine through ``ChatModel.stream`` (requests from
  threads batch together); the last is the PyTorch runner with int8 weights (float32 activations).
- ``hf``: Hugging Face ``generate()`` + ``TextIteratorStreamer``, one request at a time.
- ``llama-cpp-python``: ``Llama.create_chat_completion(stream=True)``, one request at a time.
- ``llama-server`` / ``llama-server-ngram``: llama.cpp's C++ server, without and with its prompt-lookup speculation
  (llama_server.py), ``ours-server``, `qwen-stream serve`, and ``ours-vllm`` / ``vllm-serve``, our server over
  vLLM and vLLM's own (server.py): child processes driven over HTTP.

Every system gets the same chat messages, the same sampling (greedy unless ``--sampling qwen``: sampling.py), and (with ``force_length``) exactly ``max_tokens`` new
tokens: end-of-turn tokens are disabled so no system wins by stopping early.

Prompt caches stay on as each system ships (our prefix reuse and sharing; llama-cpp-python's reuse of the previous
request's prefix), but ``reset_cache`` empties them before every measurement: within one, N prompts may share their
system prompt, and nothing is served from an earlier measurement of the same prompts.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from qwen_stream.bench import sampling as bench_sampling
from qwen_stream.bench.config import BenchConfig, BenchSystem, Messages, greedy_only
from qwen_stream.bench.metrics import StreamTrace, now

SYSTEMS = ("ours-llamacpp", "ours-llamacpp-nospec", "ours-torch", "ours-torch-int8", "hf", "llama-cpp-python",
           "llama-server", "llama-server-ngram", "ours-vllm", "vllm-serve")  # the last two need vllm: run the bench
# from .venv-vllm


class OursSystem:
    """Our ChatModel; each ``serve`` is one ``model.stream`` read on the calling thread."""

    concurrent = True

    def __init__(self, runner: str, config: BenchConfig, quantize: str | None = None, speculate: bool = True) -> None:
        from qwen_stream.api import ChatModel

        self.name = f"ours-{runner}" + (f"-{quantize}" if quantize else "") + ("" if speculate else "-nospec")
        self.config = config
        # the same KV as llama-server gets (-np N -c N x context): a full window for every slot
        self.model = ChatModel.load(config.model, runner=runner, dtype=config.dtype, threads=config.threads,
                                    quantize=quantize, prefix_cache=config.prefix_cache,
                                    max_batch_size=config.max_batch_size, context_length=config.context_length,
                                    kv_budget=config.max_batch_size * config.context_length, speculate=speculate,
                                    progress=False)
        if self.model.engine.name != runner and not self.model.engine.name.startswith(runner):
            self.model.close()
            raise RuntimeError(f"asked for the {runner} runner, got {self.model.engine.name}")

    def serve(self, messages: Messages, trace: StreamTrace) -> None:
        seen = 0
        # every setting explicit, as the peers get it: nothing from the model's generation defaults (Qwen: 1.05)
        with self.model.stream(messages=messages, max_new_tokens=self.config.max_tokens,
                               ignore_eos=self.config.force_length,
                               **bench_sampling.ours(self.config.sampling, messages)) as stream:
            for event in stream:
                t = now()
                trace.add_tokens(t, event.num_generated_tokens - seen)
                seen = event.num_generated_tokens
                trace.add_text(t, event.delta)
                trace.token_ids.extend(event.token_ids)

    def reset_cache(self) -> None:
        self.model.engine.reset_prefix_cache()

    def stats(self) -> dict[str, float]:
        s = self.model.engine.stats()
        return {"steps": s.steps, "step_s": s.step_s, "forward_s": s.forward_s, "sample_s": s.sample_s,
                "generated_tokens": s.generated_tokens, "reused_prompt_tokens": s.reused_prompt_tokens,
                "draft_n": s.drafted_tokens, "draft_n_accepted": s.accepted_draft_tokens}

    def close(self) -> None:
        self.model.close()  # also closes the runner


class HFSystem:
    """transformers ``generate()`` with a ``TextIteratorStreamer``, as the seed code streams."""

    name = "hf"
    concurrent = False

    def __init__(self, config: BenchConfig) -> None:
        greedy_only(self.name, config)
        import torch

        from qwen_stream.cpu import physical_cores
        from qwen_stream.inputs.chat_template import ChatPrompter
        from qwen_stream.models import sources

        self.config = config
        # set every time: a llama.cpp system run before may have left torch on one thread
        torch.set_num_threads(config.threads or physical_cores())
        source = sources.resolve_source(config.model, progress=False)
        self.tokenizer = sources.load_tokenizer(source)
        self.model = sources.load_hf_model(source, dtype=config.dtype or "float32", device="cpu",
                                          progress=False)
        self.prompter = ChatPrompter(self.tokenizer)  # the same prompt ids our engine gets
        self.eos_ids = list(sources.chat_stop_token_ids(self.tokenizer))

    def serve(self, messages: Messages, trace: StreamTrace) -> None:
        import torch

        ids = self.prompter.build(messages, max_prompt_tokens=self.config.context_length).ids
        streamer = _timed_streamer(self.tokenizer, trace)
        length = self.config.max_tokens
        kwargs: dict[str, Any] = {
            "input_ids": torch.tensor([ids]), "attention_mask": torch.ones(1, len(ids), dtype=torch.long),
            "max_new_tokens": length, "do_sample": False, "temperature": None, "top_p": None, "top_k": None,
            "streamer": streamer, "eos_token_id": self.eos_ids, "pad_token_id": self.eos_ids[0],
        }
        if self.config.force_length:
            kwargs["min_new_tokens"] = length
        generate: Any = self.model.generate
        worker = threading.Thread(target=generate, kwargs=kwargs, daemon=True)
        worker.start()
        for text in streamer:
            trace.add_text(now(), text)
        worker.join()

    def reset_cache(self) -> None:
        pass  # generate() keeps nothing between calls

    def stats(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        del self.model


def _timed_streamer(tokenizer: Any, trace: StreamTrace) -> Any:
    from transformers import TextIteratorStreamer

    class TimedStreamer(TextIteratorStreamer):
        """Records when each token is produced; the text still reaches the client as the streamer releases it."""

        def put(self, value: Any) -> None:
            if not self.next_tokens_are_prompt:
                trace.add_tokens(now(), int(value.numel()))
            super().put(value)

    return TimedStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)


class LlamaCppPythonSystem:
    """llama-cpp-python's OpenAI-style streaming chat, one request at a time (as its server does by default)."""

    name = "llama-cpp-python"
    concurrent = False

    def __init__(self, config: BenchConfig) -> None:
        greedy_only(self.name, config)
        from qwen_stream.bench.reference_llama import open_reference_llama
        from qwen_stream.cpu import physical_cores
        from qwen_stream.models import sources

        self.config = config
        source = sources.resolve_source(config.model, progress=False)
        if source.kind != "gguf":
            raise ValueError("llama-cpp-python needs a .gguf model")
        threads = config.threads or physical_cores()
        self.llm = open_reference_llama(Path(source.path), n_ctx=config.context_length, n_threads=threads,
                                        n_threads_batch=threads, n_batch=512, verbose=False)
        self._trace: StreamTrace | None = None
        self._evals = 0
        self._wrap_eval()
        self.logit_bias = self._end_of_turn_bias() if config.force_length else None

    def _wrap_eval(self) -> None:
        # Llama.generate evaluates the prompt, samples, then evaluates each sampled token: the k-th eval's end is
        # when the k-th new token is ready. A thin wrapper gives per-token times without a logits processor.
        original = self.llm.eval

        def timed_eval(tokens: Any) -> None:
            original(tokens)
            if self._trace is not None:
                self._trace.add_tokens(now(), 1)

        self.llm.eval = timed_eval  # type: ignore[method-assign]

    def _end_of_turn_bias(self) -> dict[int, float]:
        from llama_cpp import llama_cpp as ll

        vocab = ll.llama_model_get_vocab(self.llm.model)
        return {t: -1e9 for t in range(self.llm.n_vocab()) if ll.llama_vocab_is_eog(vocab, t)}

    def serve(self, messages: Messages, trace: StreamTrace) -> None:
        # Llama keeps the previous request's KV and reuses the prefix a new prompt shares with it (the system prompt)
        if not self.config.prefix_cache:
            self.llm.reset()
        self._trace = trace
        try:
            chunks: Any = self.llm.create_chat_completion(messages=messages,  # type: ignore[arg-type]
                                                          max_tokens=self.config.max_tokens, temperature=0.0,
                                                          stream=True, logit_bias=self.logit_bias)
            for chunk in chunks:
                delta = chunk["choices"][0]["delta"].get("content") or ""
                trace.add_text(now(), str(delta))
        finally:
            self._trace = None
        # the last eval feeds the final token back, which a generate loop cut by max_tokens never does
        del trace.token_times[self.config.max_tokens:]

    def reset_cache(self) -> None:
        self.llm.reset()  # the next prompt is evaluated from position 0

    def stats(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        self.llm.close()


def make_system(name: str, config: BenchConfig) -> BenchSystem:
    if name == "ours-llamacpp":
        return OursSystem("llamacpp", config)
    if name == "ours-llamacpp-nospec":
        return OursSystem("llamacpp", config, speculate=False)
    if name == "ours-torch":
        return OursSystem("torch", config)
    if name == "ours-torch-int8":
        return OursSystem("torch", config, quantize="int8")
    if name == "hf":
        return HFSystem(config)
    if name == "llama-cpp-python":
        return LlamaCppPythonSystem(config)
    if name in ("llama-server", "llama-server-ngram"):
        from qwen_stream.bench.llama_server import LlamaServerSystem

        return LlamaServerSystem(config, speculative=name.endswith("-ngram"))
    if name in ("ours-vllm", "vllm-serve"):
        from qwen_stream.bench.server import OursVllmServer, VllmServeSystem

        return OursVllmServer(config) if name == "ours-vllm" else VllmServeSystem(config)
    raise ValueError(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")
