"""The requests a backend has accepted and not yet finished: admission, ids, and refusal once it stops.

Every backend (our step loop, vLLM) keeps this one record, so the admission rules of the seam (backend.py) are
written once: an empty prompt or one that leaves no room for an answer is a ``ValueError``, an id in use too, a
full queue an ``EngineOverloadedError``, a stopped backend an ``EngineError``. Thread-safe: front ends submit and
abort from any thread while the backend's own thread finishes requests.
"""

from __future__ import annotations

import itertools
import threading

from qwen_stream.errors import ContextLengthError, EngineError, EngineOverloadedError


class RequestRegistry:
    def __init__(self, *, max_model_len: int, max_running: int, max_waiting: int) -> None:
        if max_running < 1 or max_waiting < 0:
            raise ValueError("max_running must be >= 1 and max_waiting >= 0")
        self.max_model_len = max_model_len
        self.max_running = max_running
        self.max_waiting = max_waiting
        self._lock = threading.Lock()
        self._unfinished: set[str] = set()
        self._ids = itertools.count()
        self._closed: str | None = None  # why new requests are refused, once the backend stopped

    def admit(self, prompt_ids: list[int], request_id: str | None = None, *, pooled: bool = False) -> str:
        """Accept a request (its id: ``request_id`` or a new one), or refuse it with the seam's errors. A pooled
        request (an embedding, a score) needs no room for an answer: its prompt may fill the window."""
        check_prompt(prompt_ids, self.max_model_len, answer_room=not pooled)
        with self._lock:
            if self._closed is not None:
                raise EngineError(self._closed)
            request_id = request_id or f"req-{next(self._ids)}"
            if request_id in self._unfinished:
                raise ValueError(f"request id {request_id!r} is already in use")
            waiting = len(self._unfinished) - self.max_running
            if waiting >= self.max_waiting:
                raise EngineOverloadedError(
                    f"server busy: {self.max_running} requests running and {max(waiting, 0)} waiting "
                    f"(limit {self.max_waiting}); retry shortly", retry_after_s=1.0)
            self._unfinished.add(request_id)
        return request_id

    def is_unfinished(self, request_id: str) -> bool:
        with self._lock:
            return request_id in self._unfinished

    def finish(self, request_id: str) -> None:
        """The request's last output is out (or nobody reads it any more)."""
        with self._lock:
            self._unfinished.discard(request_id)

    def unfinished(self) -> list[str]:
        with self._lock:
            return list(self._unfinished)

    def __len__(self) -> int:
        with self._lock:
            return len(self._unfinished)

    def close(self, why: str) -> bool:
        """Refuse every later request with ``EngineError(why)``; False if it was closed already (the first reason
        stays)."""
        with self._lock:
            if self._closed is not None:
                return False
            self._closed = why
            return True

    @property
    def closed(self) -> bool:
        return self._closed is not None


def check_prompt(prompt_ids: list[int], max_model_len: int, *, answer_room: bool = True) -> None:
    """ValueError for a prompt that cannot be served: empty, or leaving no room for an answer (or, without
    ``answer_room``, longer than the window)."""
    if not prompt_ids:
        raise ValueError("the prompt is empty: at least one token is needed")
    if not answer_room and len(prompt_ids) > max_model_len:
        raise ContextLengthError(f"the input has {len(prompt_ids)} tokens but the context window is "
                                 f"{max_model_len}", window=max_model_len, prompt_tokens=len(prompt_ids))
    if answer_room and len(prompt_ids) >= max_model_len:
        raise ContextLengthError(f"the prompt has {len(prompt_ids)} tokens but the context window is "
                                 f"{max_model_len}: it leaves no room for an answer",
                                 window=max_model_len, prompt_tokens=len(prompt_ids))
