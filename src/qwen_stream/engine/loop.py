"""Our EngineBackend: one engine thread runs the step loop and serves every front end through thread-safe queues.

Front ends call ``submit`` and ``abort`` from any thread; the engine thread admits new requests and applies aborts
before each step, so an abort takes effect within one step. The core returns TokenOutputs keyed by request id; the
engine thread routes each to the ``OutputSink`` its request was submitted with (see backend.py for the contract).
"""

from __future__ import annotations

import atexit
import logging
import queue
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass

from qwen_stream.engine.backend import EngineBackend, EngineHealth, EngineStats, OutputSink
from qwen_stream.engine.config import DEFAULT_CACHE_REUSE
from qwen_stream.engine.pooling import check_task
from qwen_stream.engine.prompt_cache.store import PromptStore
from qwen_stream.engine.registry import RequestRegistry
from qwen_stream.engine.runners.base import ModelRunner
from qwen_stream.engine.spec.draft_model import ModelDrafter
from qwen_stream.engine.spec.drafting import SpeculationConfig
from qwen_stream.engine.step import EngineCore
from qwen_stream.types import FinishReason, SamplingParams, TokenOutput

logger = logging.getLogger(__name__)

IDLE_BEAT_S = 0.5  # an idle loop wakes this often, so a heartbeat older than a step means a stuck or dead loop


@dataclass(slots=True)
class _Submit:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    sink: OutputSink


@dataclass(slots=True)
class _Abort:
    request_id: str


class _ResetPrefixCache:
    """Inbox command: forget the KV idle slots keep for reuse (applied between steps, on the engine thread)."""


class Engine:
    """The step-loop backend over one ModelRunner (implements ``EngineBackend``)."""

    def __init__(self, runner: ModelRunner, *, eos_token_ids: Sequence[int], max_running: int = 16,
                 max_waiting: int = 64, max_model_len: int | None = None, prefill_chunk: int = 512,
                 reuse_prefix: bool = True, stall_after_s: float = 60.0,
                 speculate: SpeculationConfig | None = None, drafter: ModelDrafter | None = None,
                 prompt_cache: PromptStore | None = None, cache_reuse: int = DEFAULT_CACHE_REUSE) -> None:
        self.requests = RequestRegistry(max_model_len=min(max_model_len or runner.max_seq_len, runner.max_seq_len),
                                        max_running=min(max_running, runner.max_slots), max_waiting=max_waiting)
        self.max_model_len = self.requests.max_model_len
        self.max_running = self.requests.max_running
        self.max_waiting = max_waiting
        self.name = runner.name
        self.vocab_size = runner.vocab_size
        self.core = EngineCore(runner, eos_token_ids=eos_token_ids, max_running=self.max_running,
                               max_model_len=self.max_model_len, prefill_chunk=prefill_chunk,
                               reuse_prefix=reuse_prefix, speculate=speculate, drafter=drafter,
                               prompt_cache=prompt_cache, cache_reuse=cache_reuse)
        self.prompt_cache = prompt_cache  # the engine owns it: its queued writes are finished at shutdown
        self.drafter = drafter  # the engine owns it: closed at shutdown
        self.speculate = self.core.speculate  # None when off, or when the runner cannot rewind a slot
        self.tasks = self.core.tasks  # "generate", "embed", "score": what the runner can serve (engine/pooling.py)
        self.embedding_width: int | None = getattr(runner, "embedding_width", None)
        self._inbox: queue.SimpleQueue[_Submit | _Abort | _ResetPrefixCache | None] = queue.SimpleQueue()
        self._sinks: dict[str, OutputSink] = {}  # admitted requests' sinks, engine thread only
        self._fatal: str | None = None  # why the loop died, if it did
        self.stall_after_s = stall_after_s
        self._heartbeat = time.monotonic()  # the loop's last sign of life (it beats at least every IDLE_BEAT_S)
        self._close_lock = threading.Lock()  # shutdown and the loop's end agree on who releases the model
        self._loop_done = False
        self._close_late = False
        self._thread = threading.Thread(target=self._loop, name="qwen-stream-engine", daemon=True)
        self._thread.start()
        # Stop the loop before interpreter shutdown tears modules down under a running thread.
        atexit.register(_shutdown_if_alive, weakref.ref(self))

    # ---- called from any thread -------------------------------------------------------------------------------

    def submit(self, prompt_ids: list[int], params: SamplingParams, output: OutputSink,
               request_id: str | None = None) -> str:
        check_task(params, self.tasks, self.name)
        request_id = self.requests.admit(prompt_ids, request_id, pooled=params.pooling is not None)
        self._inbox.put(_Submit(request_id, list(prompt_ids), params, output))
        return request_id

    def abort(self, request_id: str) -> None:
        if self.requests.is_unfinished(request_id):  # else finished already, or never known: aborts are idempotent
            self._inbox.put(_Abort(request_id))

    def abort_all(self) -> int:
        """Abort every unfinished request (effective at the next step); returns how many were asked to stop."""
        pending = self.requests.unfinished()
        for request_id in pending:
            self.abort(request_id)
        return len(pending)

    def reset_prefix_cache(self) -> None:
        """Forget every cached prefix kept by idle slots, before any request submitted after this call.

        Running requests keep their KV. Benchmarks use it so that no measurement is served from an earlier one."""
        self._inbox.put(_ResetPrefixCache())

    def stats(self) -> EngineStats:
        scheduler, t = self.core.scheduler, self.core.timings
        return EngineStats(running=len(scheduler.running), waiting=len(scheduler.waiting) + self._inbox.qsize(),
                           free_slots=len(scheduler.slots.free), steps=t.steps, generated_tokens=t.tokens,
                           forward_s=t.forward_s, sample_s=t.sample_s, step_s=t.total_s,
                           reused_prompt_tokens=scheduler.reused_tokens, drafted_tokens=t.drafted,
                           accepted_draft_tokens=t.accepted,
                           fast_prefill_tokens=scheduler.prefill_paths.fast_tokens if scheduler.prefill_paths else 0)

    def health(self) -> EngineHealth:
        """Whether the step loop is alive and stepping (read from any thread; cheap)."""
        age = time.monotonic() - self._heartbeat
        if self._fatal is not None:
            return EngineHealth("dead", age, self._fatal)
        if self.requests.closed:
            return EngineHealth("stopped", age, "the engine is shut down")
        if not self._thread.is_alive():
            return EngineHealth("dead", age, "the engine thread ended")
        if age > self.stall_after_s:
            return EngineHealth("stalled", age, f"no engine step for {age:.0f} s")
        return EngineHealth("ok", age)

    @property
    def num_unfinished(self) -> int:
        return len(self.requests)

    @property
    def runner(self) -> ModelRunner:
        return self.core.runner

    def is_alive(self) -> bool:
        return not self.requests.closed and self._thread.is_alive()

    def shutdown(self, timeout: float = 10.0) -> None:
        if not self.requests.close("the engine is shut down"):
            return
        self._inbox.put(None)
        self._thread.join(timeout)
        with self._close_lock:
            if not self._loop_done:  # a step still runs (a long prefill on a busy machine): freeing the model
                self._close_late = True  # under it would crash the process, so the loop frees it as it ends
                logger.warning("the engine step did not end within %.0f s; the model is released when it does",
                               timeout)
                return
        self._release()

    def _release(self) -> None:
        if self.prompt_cache is not None:  # the states are copied out already: the runner is not needed for this
            self.prompt_cache.close()
        self.core.runner.close()
        if self.drafter is not None:
            self.drafter.close()

    # ---- the engine thread ------------------------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # last resort: record it and end every request, never hang them
            self._die(exc)
        finally:
            with self._close_lock:
                self._loop_done = True
                late = self._close_late
            if late:  # shutdown gave up waiting for the last step: release the model now that it is over
                self._release()

    def _run(self) -> None:
        while True:
            self._heartbeat = time.monotonic()
            if not self._drain_inbox(block=not self.core.has_work):
                break
            if self.core.has_work:
                self._deliver(self._step())
        self._deliver(self.core.abort([s.request_id for s in (*self.core.scheduler.waiting,
                                                                *self.core.scheduler.running)]))

    def _step(self) -> list[TokenOutput]:
        """One step; an error the core did not place (a bug in scheduling...) fails the running requests only."""
        try:
            return self.core.step()
        except Exception as exc:
            logger.exception("engine step failed")
            message = f"engine step failed: {type(exc).__name__}: {exc}"
            outputs = self.core.fail_running(message)
            # a request the scheduler was moving when it failed (taken from the queue, not yet running) is owed an
            # answer too: anything handed to the core that it no longer tracks ends with the error now
            scheduler = self.core.scheduler
            tracked = {s.request_id for s in (*scheduler.waiting, *scheduler.running)}
            tracked.update(out.request_id for out in outputs)
            return outputs + [TokenOutput(rid, [], FinishReason.ABORT, error=message)
                              for rid in self._sinks if rid not in tracked]

    def _die(self, exc: BaseException) -> None:
        """The loop cannot go on: refuse new requests and end every known one with the error."""
        logger.critical("the engine loop died", exc_info=exc)
        self._fatal = f"{type(exc).__name__}: {exc}"
        self.requests.close(f"the engine failed and serves no more requests: {self._fatal}")
        while True:  # submitted but not admitted yet: they are owed an answer too
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, _Submit):
                self._sinks[item.request_id] = item.sink
        message = f"the engine failed: {self._fatal}"
        self._deliver([TokenOutput(rid, [], FinishReason.ABORT, error=message) for rid in list(self._sinks)])

    def _drain_inbox(self, *, block: bool) -> bool:
        """Apply queued submits and aborts; False once shutdown was asked for."""
        aborts: list[str] = []
        try:
            # Idle, the loop still wakes every IDLE_BEAT_S so its heartbeat tells the truth.
            item = self._inbox.get(timeout=IDLE_BEAT_S) if block else self._inbox.get_nowait()
            while True:
                if item is None:
                    return False
                if isinstance(item, _Submit):
                    self._admit(item)
                elif isinstance(item, _ResetPrefixCache):
                    self._reset_prefix_cache()
                else:
                    aborts.append(item.request_id)
                item = self._inbox.get_nowait()
        except queue.Empty:
            pass
        finally:
            if aborts:
                self._deliver(self.core.abort(aborts))
        return True

    def _admit(self, item: _Submit) -> None:
        self._sinks[item.request_id] = item.sink
        try:
            self.core.add(item.request_id, item.prompt_ids, item.params)
        except Exception as exc:  # e.g. a token id outside the vocabulary
            logger.exception("could not admit request %s", item.request_id)
            self._deliver([TokenOutput(item.request_id, [], error=str(exc), finish_reason=FinishReason.ABORT)])

    def _reset_prefix_cache(self) -> None:
        try:
            self.core.reset_prefix_cache()
        except Exception:  # only a cache: serving goes on (a failed step forgets the KV anyway)
            logger.exception("resetting the prefix cache failed")

    def _deliver(self, outputs: list[TokenOutput]) -> None:
        for out in outputs:
            self._send(out)

    def _send(self, out: TokenOutput) -> None:
        request_id = out.request_id
        finished = out.finish_reason is not None
        sink = self._sinks.pop(request_id, None) if finished else self._sinks.get(request_id)
        if finished:
            self.requests.finish(request_id)
        if sink is None:  # never admitted: nobody to tell
            logger.warning("output for unknown request %s dropped", request_id)
            return
        try:
            sink(out)
        except Exception:  # a consumer that went away (closed event loop...): stop working for it
            logger.debug("sink of %s failed; aborting it", request_id, exc_info=True)
            if out.finish_reason is None:
                self._inbox.put(_Abort(request_id))


def _shutdown_if_alive(ref: weakref.ref[Engine]) -> None:
    engine = ref()
    if engine is not None:
        engine.shutdown(timeout=2.0)


def wait_idle(engine: EngineBackend, timeout: float = 10.0) -> bool:
    """Test and shutdown helper: wait until no request is running or waiting."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine.num_unfinished == 0:
            return True
        time.sleep(0.01)
    return False
