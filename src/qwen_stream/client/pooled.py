"""Pooled requests (embeddings, scores) submitted to a backend and read back: each ends with one output, its vector.

A call may bring thousands of texts while the backend queues ``max_waiting`` requests at most, and other clients
queue too: so a call keeps at most ``window`` of its requests in the engine and submits the next as each one ends.
A full queue (other clients' requests) only makes it wait for its own to finish; with none of its own in flight the
refusal propagates (a 429). Anything that ends the call early (an error, Ctrl-C, a cancelled task, a disconnected
client) aborts what it still has in flight.
"""

from __future__ import annotations

import asyncio
import queue
from collections.abc import Callable, Sequence

from qwen_stream.engine.backend import EngineBackend
from qwen_stream.errors import EngineError, EngineOverloadedError
from qwen_stream.inputs.request import EngineRequest
from qwen_stream.types import FinishReason, TokenOutput


class _Flight:
    """The submitting half both readers share: what is in the engine, and the last output of each request."""

    def __init__(self, engine: EngineBackend, requests: Sequence[EngineRequest], window: int | None) -> None:
        self.engine = engine
        self.requests = requests
        self.window = window or max(1, engine.max_running + min(engine.max_running, engine.max_waiting // 2))
        self.results: list[TokenOutput | None] = [None] * len(requests)
        self.in_flight: dict[int, str] = {}  # index -> request id
        self.next = 0
        self.done = 0

    def fill(self, sink: Callable[[int], Callable[[TokenOutput], None]]) -> None:
        """Submit requests until the window is full; a full engine queue waits for one of ours to end."""
        while self.next < len(self.requests) and len(self.in_flight) < self.window:
            request = self.requests[self.next]
            try:
                request_id = self.engine.submit(request.prompt_ids, request.params, sink(self.next))
            except EngineOverloadedError:
                if self.in_flight:
                    return
                raise
            self.in_flight[self.next] = request_id
            self.next += 1

    def take(self, index: int, out: TokenOutput) -> None:
        """One output of request ``index``; EngineError when the backend failed it or it ended without a vector."""
        if out.error is not None:
            raise EngineError(out.error)
        if out.finish_reason is None:
            return
        self.in_flight.pop(index, None)
        if out.finish_reason is FinishReason.ABORT or out.embedding is None:
            raise EngineError("a pooled request ended without its vector (aborted)")
        self.results[index] = out
        self.done += 1

    @property
    def finished(self) -> bool:
        return self.done == len(self.requests)

    def abort_rest(self) -> None:
        for request_id in self.in_flight.values():
            self.engine.abort(request_id)
        self.in_flight.clear()

    def outputs(self) -> list[TokenOutput]:
        return [out for out in self.results if out is not None]


def run_pooled(engine: EngineBackend, requests: Sequence[EngineRequest], *,
               window: int | None = None) -> list[TokenOutput]:
    """Every request's final output, in request order, read on this thread."""
    flight = _Flight(engine, requests, window)
    outputs: queue.SimpleQueue[tuple[int, TokenOutput]] = queue.SimpleQueue()
    try:
        while not flight.finished:
            flight.fill(lambda i: lambda out: outputs.put((i, out)))
            flight.take(*outputs.get())
    finally:
        flight.abort_rest()
    return flight.outputs()


async def arun_pooled(engine: EngineBackend, requests: Sequence[EngineRequest], *,
                      window: int | None = None) -> list[TokenOutput]:
    """Every request's final output, in request order, read in this event loop (cancelling aborts the rest)."""
    flight = _Flight(engine, requests, window)
    loop = asyncio.get_running_loop()
    outputs: asyncio.Queue[tuple[int, TokenOutput]] = asyncio.Queue()

    def sink(index: int) -> Callable[[TokenOutput], None]:
        def put(out: TokenOutput) -> None:
            loop.call_soon_threadsafe(outputs.put_nowait, (index, out))

        return put

    try:
        while not flight.finished:
            flight.fill(sink)
            flight.take(*await outputs.get())
    finally:
        flight.abort_rest()
    return flight.outputs()
