"""The seam between front ends and an engine: what every backend (our step loop, vLLM, ...) promises.

Token ids in, :class:`~qwen_stream.types.TokenOutput` out, keyed by request id. A backend runs its work on its own
thread (or event loop) and hands each request's outputs to the ``OutputSink`` given at ``submit``, in order, the
last one with ``finish_reason`` set. Text, stop strings and protocols stay above the seam (output/, client/consumer.py).

The contract, shared by every implementation:
- ``submit`` refuses at once, never queues forever: ``ValueError`` for a prompt that cannot run (empty, no room
  left in the context window, a request id in use), ``EngineOverloadedError`` when ``max_waiting`` requests already
  wait for a slot, ``EngineError`` once shut down.
- ``abort`` is idempotent and takes effect within one step: the request's last output has ``FinishReason.ABORT``.
- A request the backend fails ends with an output whose ``error`` is set (and ``FinishReason.ABORT``).
- Pooled requests (``params.pooling`` set: embeddings and scores, types.PoolingParams) are prompts only: prefilled,
  never sampled, and answered by ONE output with ``finish_reason`` STOP, no tokens and ``embedding`` set (the
  pooled vector, or the asked logits). Their prompt may fill the whole window. A backend that cannot serve one says
  so at ``submit`` with ``UnsupportedTaskError``; so does one asked to generate that cannot (an encoder). The
  optional attributes ``tasks`` (a frozenset of "generate", "embed", "score"; read with ``backend_tasks``) and
  ``embedding_width`` (the vector's width, None if unknown) let front ends say what a model can do up front.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from qwen_stream.types import SamplingParams, TokenOutput

# Receives one request's outputs on the backend's thread: it must not block (put into a queue, or hand over to
# asyncio with ``loop.call_soon_threadsafe``). If it raises, the backend aborts that request.
OutputSink = Callable[[TokenOutput], None]


@dataclass(slots=True, frozen=True)
class EngineStats:
    running: int
    waiting: int
    free_slots: int
    steps: int
    generated_tokens: int
    forward_s: float
    sample_s: float
    step_s: float
    reused_prompt_tokens: int = 0  # prompt tokens taken from a slot's cached prefix instead of prefilled
    drafted_tokens: int = 0  # speculative decoding: tokens drafted and checked ...
    accepted_draft_tokens: int = 0  # ... and those the model agreed with
    fast_prefill_tokens: int = 0  # prompt tokens computed by the fast prefill (int8 GEMMs) instead of llama.cpp

    @property
    def draft_acceptance(self) -> float | None:
        """Accepted / drafted tokens (None before any draft)."""
        return self.accepted_draft_tokens / self.drafted_tokens if self.drafted_tokens else None

    @property
    def mean_step_ms(self) -> float:
        return 1000.0 * self.step_s / self.steps if self.steps else 0.0


@dataclass(slots=True, frozen=True)
class EngineHealth:
    """What a backend says of its own loop, and ``/health`` reports: ``ok``; ``stalled`` (no step for ``stall_after_s`` with work to do); ``dead``
    (the loop ended with an unexpected error: ``detail``); ``stopped`` (shut down)."""

    status: Literal["ok", "stalled", "dead", "stopped"]
    heartbeat_age_s: float
    detail: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def backend_tasks(engine: object) -> frozenset[str]:
    """What a backend serves (its optional ``tasks``; one without it generates text only)."""
    tasks = getattr(engine, "tasks", None)
    return frozenset(tasks) if tasks is not None else frozenset({"generate"})


@runtime_checkable
class EngineBackend(Protocol):
    """One loaded model serving many concurrent requests (see the module docstring for the contract)."""

    name: str  # what computes, e.g. "torch-native", "torch-hf", "llamacpp"
    max_model_len: int  # prompt + answer tokens per request
    vocab_size: int  # width of the model's logits (token ids are below it; grammars mask this many)
    max_running: int  # requests decoded together at most
    max_waiting: int  # requests queued for a slot at most; beyond it submit raises EngineOverloadedError

    def submit(self, prompt_ids: list[int], params: SamplingParams, output: OutputSink,
               request_id: str | None = None) -> str:
        """Queue a request; its outputs go to ``output``. Returns its request id (``request_id`` or a new one)."""
        ...

    def abort(self, request_id: str) -> None:
        """Stop a request (idempotent; unknown and finished ids are ignored)."""
        ...

    def abort_all(self) -> int:
        """Abort every unfinished request; returns how many were asked to stop."""
        ...

    def reset_prefix_cache(self) -> None:
        """Forget cached prompt prefixes before any request submitted after this call (running ones keep theirs)."""
        ...

    def stats(self) -> EngineStats:
        ...

    @property
    def num_unfinished(self) -> int:
        """Requests submitted and not yet finished."""
        ...

    def is_alive(self) -> bool:
        """Whether the backend still serves requests (False once shut down or if its worker died)."""
        ...

    def health(self) -> EngineHealth:
        """Whether the backend serves: ``ok``, ``stalled``, ``dead`` (with why) or ``stopped`` (cheap, any thread)."""
        ...

    def shutdown(self, timeout: float = 10.0) -> None:
        """Abort everything, stop the worker and release the model (idempotent)."""
        ...
