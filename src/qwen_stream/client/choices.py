"""A request's choices read as one stream: ``n`` engine requests (per prompt) merged into ``(index, event)`` pairs,
with the request's token usage counted as they end, and one ``aclose`` that aborts whatever still runs.

The server renders these events in each protocol's shape; the Python API collects them into answers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import anyio

from qwen_stream.client.streams import AsyncRequestStream
from qwen_stream.inputs.request import EngineRequest
from qwen_stream.types import StreamEvent


@dataclass(slots=True)
class TokenUsage:
    """Tokens a request's answers cost, whatever a protocol calls them: a prompt counts once however many choices
    it has (as OpenAI counts), ``cached_tokens`` of it were served from the prefix cache."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def add(self, event: StreamEvent, counts_prompt: bool) -> None:
        self.completion_tokens += event.num_generated_tokens
        if counts_prompt:
            self.prompt_tokens += event.num_prompt_tokens
            self.cached_tokens += event.num_cached_tokens


class Choices:
    """The engine requests of one request, started together; ``events()`` yields ``(choice index, event)``."""

    def __init__(self, streams: Sequence[AsyncRequestStream], requests: Sequence[EngineRequest]) -> None:
        self.streams = list(streams)
        self.requests = list(requests)
        self.usage = TokenUsage()
        self._pumps: list[asyncio.Task[None]] = []

    @property
    def prompt_tokens(self) -> int:
        """The first prompt's tokens, known before any answer (Anthropic's message_start needs them)."""
        return self.requests[0].info.num_tokens

    async def events(self) -> AsyncIterator[tuple[int, StreamEvent]]:
        source = self._single() if len(self.streams) == 1 else self._merged()
        async for index, event in source:
            if event.finish_reason is not None:
                self.usage.add(event, self.requests[index].counts_prompt)
            yield index, event

    async def _single(self) -> AsyncIterator[tuple[int, StreamEvent]]:
        async for event in self.streams[0]:
            yield 0, event

    async def _merged(self) -> AsyncIterator[tuple[int, StreamEvent]]:
        # One pump task per request feeds a shared queue; None marks a finished request.
        queue: asyncio.Queue[tuple[int, StreamEvent | BaseException | None]] = asyncio.Queue()

        async def pump(index: int, stream: AsyncRequestStream) -> None:
            try:
                async for event in stream:
                    queue.put_nowait((index, event))
            except Exception as exc:  # handed to the consumer, which re-raises it
                queue.put_nowait((index, exc))
            queue.put_nowait((index, None))

        self._pumps = [asyncio.ensure_future(pump(i, s)) for i, s in enumerate(self.streams)]
        remaining = len(self._pumps)
        while remaining:
            index, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item

    async def collect(self) -> list[StreamEvent]:
        """Run every choice to its end; the final event of each, in choice order."""
        finals: dict[int, StreamEvent] = {}
        try:
            async for index, event in self.events():
                if event.finished:
                    finals[index] = event
        finally:
            await self.aclose()
        return [finals[i] for i in range(len(self.streams))]

    async def aclose(self) -> None:
        """Abort every request still running (idempotent), whatever cancellation is pending."""
        for task in self._pumps:
            task.cancel()  # a cancelled pump aborts its stream too; aclose below makes sure
        with anyio.CancelScope(shield=True):
            for stream in self.streams:
                await stream.aclose()
