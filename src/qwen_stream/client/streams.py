"""A request in flight as seen by a front end: an iterator (sync or async) of StreamEvents.

Each stream owns one engine request. Leaving it early in any way (break, close(), Ctrl-C, task cancellation,
garbage collection) aborts the request, which frees its KV slot at the engine's next step. What a reader does
with each engine output (errors, stop strings, cancelling) is the RequestConsumer's job (client/consumer.py), shared with
the offline batch.
"""

from __future__ import annotations

import asyncio
import queue
from typing import Any

from qwen_stream.client.consumer import RequestConsumer
from qwen_stream.engine.backend import EngineBackend
from qwen_stream.errors import EngineError
from qwen_stream.inputs.request import PromptInfo
from qwen_stream.output.message import coalesce_tool_call_deltas
from qwen_stream.output.processor import OutputProcessor
from qwen_stream.types import SamplingParams, StreamEvent, TokenOutput

# How often a blocked reader wakes to let signal handlers (Ctrl-C) run; tokens arrive without waiting for it.
_POLL_S = 0.2


def merge_events(events: list[StreamEvent]) -> StreamEvent:
    """Collapse events a slow reader missed into one: the deltas joined, the latest totals kept."""
    if len(events) == 1:
        return events[0]
    last = events[-1]
    token_ids = [t for e in events for t in e.token_ids]
    logprobs = [lp for e in events for lp in (e.logprobs or [])] or None
    return StreamEvent(delta="".join(e.delta for e in events), text=last.text, token_ids=token_ids,
                       finish_reason=last.finish_reason, num_prompt_tokens=events[0].num_prompt_tokens or
                       last.num_prompt_tokens, num_generated_tokens=last.num_generated_tokens,
                       time_to_first_token_s=last.time_to_first_token_s, elapsed_s=last.elapsed_s,
                       logprobs=logprobs, num_cached_tokens=last.num_cached_tokens,
                       reasoning_delta="".join(e.reasoning_delta for e in events), reasoning=last.reasoning,
                       tool_call_deltas=coalesce_tool_call_deltas([d for e in events for d in e.tool_call_deltas]),
                       tool_calls=last.tool_calls, stop_string=last.stop_string)


class _StreamBase:
    def __init__(self, engine: EngineBackend, processor: OutputProcessor, prompt_info: PromptInfo) -> None:
        self.engine = engine
        self.prompt_info = prompt_info
        self._consumer = RequestConsumer(engine, processor)

    @property
    def request_id(self) -> str:
        return self._consumer.request_id

    @property
    def final(self) -> StreamEvent | None:
        """The last event, once finished."""
        return self._consumer.final

    @property
    def finished(self) -> bool:
        return self._consumer.finished

    @property
    def _done(self) -> bool:
        return self._consumer.finished

    def cancel(self) -> None:
        """Stop generating now (idempotent). The stream then ends without a final event."""
        self._consumer.cancel()

    def _process(self, out: TokenOutput) -> StreamEvent:
        return self._consumer.process(out)


class RequestStream(_StreamBase):
    """Synchronous iterator of StreamEvents for one request."""

    def __init__(self, engine: EngineBackend, prompt_ids: list[int], params: SamplingParams,
                 processor: OutputProcessor, prompt_info: PromptInfo) -> None:
        super().__init__(engine, processor, prompt_info)
        self._outputs: queue.SimpleQueue[TokenOutput] = queue.SimpleQueue()
        self._consumer.submit(prompt_ids, params, self._outputs.put)

    def __iter__(self) -> RequestStream:
        return self

    def __next__(self) -> StreamEvent:
        if self._done:
            raise StopIteration
        try:
            events = [self._process(self._next_output())]
            while not self._done:  # catch up with whatever the engine produced meanwhile
                try:
                    events.append(self._process(self._outputs.get_nowait()))
                except queue.Empty:
                    break
        except BaseException:  # KeyboardInterrupt included: the caller gave up, so does the engine
            self.cancel()
            raise
        return merge_events(events)

    def _next_output(self) -> TokenOutput:
        while True:
            try:
                return self._outputs.get(timeout=_POLL_S)
            except queue.Empty:
                continue

    def close(self) -> None:
        self.cancel()

    def __enter__(self) -> RequestStream:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def collect(self) -> StreamEvent:
        """Run to the end and return the final event (its text is the whole answer)."""
        for _ in self:
            pass
        if self.final is None:
            raise EngineError("the request was cancelled before it finished")
        return self.final


class AsyncRequestStream(_StreamBase):
    """Asynchronous iterator of StreamEvents; create it inside a running event loop."""

    def __init__(self, engine: EngineBackend, prompt_ids: list[int], params: SamplingParams,
                 processor: OutputProcessor, prompt_info: PromptInfo) -> None:
        super().__init__(engine, processor, prompt_info)
        loop = asyncio.get_running_loop()
        self._outputs: asyncio.Queue[TokenOutput] = asyncio.Queue()

        def sink(out: TokenOutput) -> None:  # runs on the engine thread
            loop.call_soon_threadsafe(self._outputs.put_nowait, out)

        self._consumer.submit(prompt_ids, params, sink)

    def __aiter__(self) -> AsyncRequestStream:
        return self

    async def __anext__(self) -> StreamEvent:
        if self._done:
            raise StopAsyncIteration
        try:
            events = [self._process(await self._outputs.get())]
            while not self._done and not self._outputs.empty():
                events.append(self._process(self._outputs.get_nowait()))
        except BaseException:  # CancelledError included: a disconnected client aborts its request
            self.cancel()
            raise
        return merge_events(events)

    async def aclose(self) -> None:
        self.cancel()

    async def __aenter__(self) -> AsyncRequestStream:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self.cancel()

    async def collect(self) -> StreamEvent:
        async for _ in self:
            pass
        if self.final is None:
            raise EngineError("the request was cancelled before it finished")
        return self.final
