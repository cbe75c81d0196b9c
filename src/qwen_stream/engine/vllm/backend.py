"""vLLM behind the engine seam: its async engine (``AsyncLLM``, vLLM v1) serving token ids, on its own event loop.

vLLM schedules, batches, pages the KV cache and spreads the model over GPUs and nodes (tensor, pipeline and data
parallel; Ray for many hosts). We keep everything above the seam: prompts arrive as token ids, vLLM sends back
delta token ids without text (``detokenize=False``), and our output layer makes the text, stop strings and finish
reasons exactly as for the native engine. Our waiting cap stays too, so overload is still an immediate
``EngineOverloadedError`` (HTTP 429) rather than an unbounded queue.

Threads: ``AsyncLLM`` lives on one event loop that runs on a daemon thread of its own. Callers on any thread
``submit``/``abort`` by scheduling callbacks on that loop (``call_soon_threadsafe`` keeps their order), and every
output is handed to the request's sink on that loop's thread, as the native engine hands them on its own.

Pooled requests (embeddings, scores) are refused at ``submit`` with a typed refusal (a 400): vLLM serves them only
from a model started as a pooling model (``--runner pooling``), never beside generation on one engine.
"""

from __future__ import annotations

import asyncio
import atexit
import json
import logging
import threading
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qwen_stream.engine.backend import EngineHealth, EngineStats, OutputSink
from qwen_stream.engine.pooling import GENERATE, check_task
from qwen_stream.engine.registry import RequestRegistry
from qwen_stream.engine.vllm.mapping import (
    VllmOptions,
    engine_kwargs,
    kv_cache_bytes,
    sampling_kwargs,
    stop_ids_for,
    token_output,
)
from qwen_stream.types import FinishReason, SamplingParams, TokenOutput

logger = logging.getLogger(__name__)

START_TIMEOUT_S = 1800.0  # a large model on a cold disk; vLLM itself fails faster when something is wrong
_DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


def vllm_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("vllm") is not None


def require_vllm() -> None:
    if not vllm_available():
        raise ImportError("the vLLM backend needs the vllm package, which lives in its own virtual environment: "
                          "EXTRAS=vllm bash scripts/install.sh, then run .venv-vllm/bin/qwen-stream "
                          "(see docs/vllm.md)")


class VllmBackend:
    """An EngineBackend over vLLM's AsyncLLM (see the module docstring)."""

    def __init__(self, model_dir: str | Path, *, eos_token_ids: Sequence[int], max_model_len: int,
                 max_running: int = 16, max_waiting: int = 64, prefix_cache: bool = True, dtype: str | None = None,
                 options: VllmOptions | None = None, trust_remote_code: bool = False) -> None:
        require_vllm()
        self.requests = RequestRegistry(max_model_len=max_model_len, max_running=max_running,
                                        max_waiting=max_waiting)
        self.name = "vllm"
        self.tasks = frozenset({GENERATE})  # generation only: pooled requests are refused (module docstring)
        self.max_model_len = max_model_len
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.eos_token_ids = tuple(eos_token_ids)
        self.options = options or VllmOptions()
        self._tasks: dict[str, asyncio.Task[None]] = {}  # touched on the loop thread only
        self._generated = 0
        self._cached = 0
        _bind_cpu_workers(self.options)
        settings = vllm_model_settings(Path(model_dir), dtype=dtype, max_model_len=max_model_len,
                                       max_running=max_running, options=self.options)
        self.vocab_size = settings.vocab_size
        kwargs = engine_kwargs(str(model_dir), self.options, max_model_len=max_model_len, max_running=max_running,
                               prefix_cache=prefix_cache, dtype=settings.dtype, trust_remote_code=trust_remote_code,
                               kv_cache_bytes=settings.kv_cache_bytes)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="qwen-stream-vllm", daemon=True)
        self._thread.start()
        try:
            self._llm = self._call(_start_engine(kwargs), START_TIMEOUT_S)
        except BaseException:
            self._stop_loop()
            raise
        atexit.register(_shutdown_if_alive, weakref.ref(self))

    # ---- called from any thread -------------------------------------------------------------------------------

    def submit(self, prompt_ids: list[int], params: SamplingParams, output: OutputSink,
               request_id: str | None = None) -> str:
        check_task(params, self.tasks, "vLLM")
        request_id = self.requests.admit(prompt_ids, request_id)
        try:
            sampling = self._sampling(prompt_ids, params)  # ValueError for a field vLLM refuses: the caller's 400
        except BaseException:
            self.requests.finish(request_id)
            raise
        self._loop.call_soon_threadsafe(self._start, request_id, list(prompt_ids), params, sampling, output)
        return request_id

    def _sampling(self, prompt_ids: list[int], params: SamplingParams) -> Any:
        from vllm import SamplingParams as VllmSamplingParams
        from vllm.sampling_params import RequestOutputKind

        kwargs = sampling_kwargs(params, eos_token_ids=self.eos_token_ids, prompt_len=len(prompt_ids),
                                 max_model_len=self.max_model_len, vocab_size=self.vocab_size)
        try:
            return VllmSamplingParams(**kwargs, output_kind=RequestOutputKind.DELTA)
        except Exception as exc:  # vLLM's own validation (its errors do not all derive from ValueError)
            raise ValueError(f"vLLM refused the sampling parameters: {exc}") from exc

    def abort(self, request_id: str) -> None:
        if not self.requests.is_unfinished(request_id) or self.requests.closed:
            return  # finished already, or never known: aborts are idempotent
        self._loop.call_soon_threadsafe(self._cancel, request_id)

    def abort_all(self) -> int:
        pending = self.requests.unfinished()
        for request_id in pending:
            self.abort(request_id)
        return len(pending)

    def reset_prefix_cache(self) -> None:
        """Forget vLLM's cached prefix blocks (blocks that running requests hold are kept by vLLM)."""
        if not self._call(self._llm.reset_prefix_cache(), 60.0):
            logger.warning("vLLM kept its prefix cache: requests were still running")

    def stats(self) -> EngineStats:
        n = self.num_unfinished
        running = min(n, self.max_running)
        # vLLM keeps its step timings in its own process; what we see is per request
        return EngineStats(running=running, waiting=n - running, free_slots=self.max_running - running, steps=0,
                           generated_tokens=self._generated, forward_s=0.0, sample_s=0.0, step_s=0.0,
                           reused_prompt_tokens=self._cached)

    @property
    def num_unfinished(self) -> int:
        return len(self.requests)

    def is_alive(self) -> bool:
        return not self.requests.closed and self._thread.is_alive() and not self._llm.errored

    def health(self) -> EngineHealth:
        # vLLM's own engine core has no heartbeat we can read; its errored flag and our loop thread are the truth
        if self.requests.closed:
            return EngineHealth("stopped", 0.0, "the engine is shut down")
        if self._llm.errored:
            return EngineHealth("dead", 0.0, "the vLLM engine core reported an error")
        if not self._thread.is_alive():
            return EngineHealth("dead", 0.0, "the vLLM event-loop thread ended")
        return EngineHealth("ok", 0.0)

    def shutdown(self, timeout: float = 10.0) -> None:
        if not self.requests.close("the engine is shut down"):
            return
        try:
            self._call(self._close(timeout), timeout + 30.0)
        except Exception:
            logger.warning("vLLM did not shut down cleanly", exc_info=True)
        self._stop_loop()

    # ---- the loop thread --------------------------------------------------------------------------------------

    def _start(self, request_id: str, prompt_ids: list[int], params: SamplingParams, sampling: Any,
               output: OutputSink) -> None:
        task = self._loop.create_task(self._serve(request_id, prompt_ids, params, sampling, output))
        self._tasks[request_id] = task
        # A task cancelled before its first step never runs _serve's body: this still ends the request.
        task.add_done_callback(lambda _: self._end(request_id, output))

    def _cancel(self, request_id: str) -> None:
        task = self._tasks.get(request_id)
        if task is not None:
            task.cancel()  # vLLM's generate() aborts the request on CancelledError, within its next step

    async def _serve(self, request_id: str, prompt_ids: list[int], params: SamplingParams, sampling: Any,
                     output: OutputSink) -> None:
        from vllm.inputs import TokensPrompt

        stop_ids = stop_ids_for(params, self.eos_token_ids)
        stream = self._llm.generate(TokensPrompt(prompt_token_ids=prompt_ids), sampling, request_id)
        first = True
        try:
            async for result in stream:
                out = token_output(request_id, result.outputs[0], stop_ids=stop_ids, logprobs=params.logprobs,
                                   num_prompt_tokens=len(prompt_ids) if first else 0,
                                   num_cached_tokens=(result.num_cached_tokens or 0) if first else 0)
                first = False
                if not self._send(request_id, output, out):
                    break  # the reader is gone: aclose() below aborts the request in vLLM
        except asyncio.CancelledError:
            pass  # aborted: _end sends the final output
        except Exception as exc:  # the engine died, or failed this request
            logger.warning("vLLM failed request %s: %s", request_id, exc)
            self._send(request_id, output, _failed(request_id, exc))
        finally:
            await stream.aclose()

    def _send(self, request_id: str, output: OutputSink, out: TokenOutput) -> bool:
        """Hand one output to its sink; False when the sink raised (the request is then dropped)."""
        self._generated += len(out.new_token_ids)
        self._cached += out.num_cached_tokens
        final = out.finish_reason is not None
        if final:
            self._forget(request_id)
        try:
            output(out)
        except Exception:  # a consumer that went away (closed event loop...): stop working for it
            logger.debug("sink of %s failed; aborting it", request_id, exc_info=True)
            self._forget(request_id)
            return False
        return True

    def _end(self, request_id: str, output: OutputSink) -> None:
        self._tasks.pop(request_id, None)
        if self.requests.is_unfinished(request_id):
            self._send(request_id, output, TokenOutput(request_id, [], FinishReason.ABORT))

    def _forget(self, request_id: str) -> None:
        self.requests.finish(request_id)

    async def _close(self, timeout: float) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=timeout)
        self._llm.shutdown()

    def _call(self, coroutine: Any, timeout: float) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5.0)


async def _start_engine(kwargs: dict[str, Any]) -> Any:
    """Create AsyncLLM on the loop that will run it (its output handler is a task of this loop)."""
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.v1.engine.async_llm import AsyncLLM

    return AsyncLLM.from_engine_args(AsyncEngineArgs(**kwargs))


def _failed(request_id: str, exc: BaseException) -> TokenOutput:
    return TokenOutput(request_id, [], FinishReason.ABORT, error=f"{type(exc).__name__}: {exc}")


@dataclass(frozen=True, slots=True)
class VllmModelSettings:
    """What the backend and the `vllm-serve` bench peer both derive from a checkpoint, so they match."""

    model_dir: Path
    dtype: str
    kv_cache_bytes: int | None  # None: vLLM's own sizing (GPUs, or the user sized it)
    vocab_size: int


def read_text_config(model_dir: Path) -> dict[str, Any]:
    """config.json of the checkpoint's language model (multimodal checkpoints nest it under text_config)."""
    config = json.loads((model_dir / "config.json").read_text(encoding="utf-8"))
    return dict(config.get("text_config") or config)


def vllm_model_settings(model_dir: Path, *, dtype: str | None, max_model_len: int, max_running: int,
                        options: VllmOptions | None = None) -> VllmModelSettings:
    """dtype None: float32 on a CPU, bfloat16 (float16 where unsupported) on a GPU, as the native PyTorch runner."""
    import torch

    from qwen_stream.devices import resolve_dtype

    chosen = resolve_dtype(dtype, torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = str(chosen).removeprefix("torch.")
    config = read_text_config(model_dir)
    return VllmModelSettings(model_dir=model_dir, dtype=dtype,
                             kv_cache_bytes=_cpu_kv_bytes(config, options or VllmOptions(), max_model_len,
                                                          max_running, dtype),
                             vocab_size=int(config.get("vocab_size") or 2**31 - 1))  # unknown: keep every bias


def _cpu_kv_bytes(config: dict[str, Any], options: VllmOptions, max_model_len: int, max_running: int,
                  dtype: str) -> int | None:
    """On a CPU build, KV memory for the work asked (vLLM's own default takes a fixed share of the RAM); None on
    GPUs, where --gpu-memory-utilization decides, and whenever the user sized it (env or engine argument)."""
    import os

    import torch

    if torch.cuda.is_available() or os.environ.get("VLLM_CPU_KVCACHE_SPACE"):
        return None
    if {"kv_cache_memory_bytes", "gpu_memory_utilization"} & set(options.engine_args):
        return None
    return kv_cache_bytes(config, max_model_len=max_model_len, max_running=max_running,
                          dtype_bytes=_DTYPE_BYTES.get(dtype, 4))


def _bind_cpu_workers(options: VllmOptions) -> None:
    """vLLM's CPU build binds each worker's OpenMP threads to a NUMA node, and refuses several workers on one
    node ("Not enough allowed NUMA nodes"). Unless told otherwise, give each worker its own share of the cores
    this process may use (TP=2 on 2 cores: "0|1"; data-parallel ranks too). Engine processes inherit the variable."""
    import os

    import torch

    world = options.tensor_parallel_size * options.pipeline_parallel_size * options.data_parallel_size
    if world == 1 or torch.cuda.is_available() or os.environ.get("VLLM_CPU_OMP_THREADS_BIND"):
        return
    os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cpu_binding(sorted(os.sched_getaffinity(0)), world)


def cpu_binding(cores: list[int], workers: int) -> str:
    """Split ``cores`` into ``workers`` contiguous groups in VLLM_CPU_OMP_THREADS_BIND's syntax ("0-3|4-7")."""
    if len(cores) < workers:
        raise ValueError(f"{workers} vLLM CPU workers need at least {workers} cores; this process may use "
                         f"{len(cores)}. Lower --tensor-parallel-size / --pipeline-parallel-size")
    size = len(cores) // workers
    groups = [cores[i * size:(i + 1) * size] for i in range(workers)]
    return "|".join(",".join(str(c) for c in group) for group in groups)


def _shutdown_if_alive(ref: weakref.ref[VllmBackend]) -> None:
    backend = ref()
    if backend is not None:
        backend.shutdown(timeout=2.0)
