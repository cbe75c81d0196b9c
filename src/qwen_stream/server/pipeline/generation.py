"""What every generating endpoint shares: ``n`` engine requests merged into one event stream, client-disconnect
handling and token strings for logprobs."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from starlette.requests import Request

from qwen_stream.server.metrics import RequestTracker, ServerMetrics
from qwen_stream.server.protocols.openai.protocol import Usage
from qwen_stream.types import SamplingParams, StreamEvent

if TYPE_CHECKING:
    from qwen_stream.api import AsyncRequestStream

T = TypeVar("T")
StreamStarter = Callable[[SamplingParams], "AsyncRequestStream"]


class ClientDisconnected(Exception):
    """The client went away before a non-streaming answer was ready; its requests were aborted."""


@dataclass(slots=True)
class Choice:
    """One engine request behind one choice index."""

    index: int
    stream: AsyncRequestStream
    tracker: RequestTracker
    counts_prompt: bool  # with n > 1 the prompt is counted once in usage, as OpenAI does


class Generation:
    """The engine requests of one HTTP request; ``events()`` yields ``(choice index, event)`` as they come."""

    def __init__(self, choices: list[Choice]) -> None:
        self.choices = choices
        self.usage = Usage()
        self._pumps: list[asyncio.Task[None]] = []

    @classmethod
    async def start(cls, starters: Sequence[tuple[StreamStarter, SamplingParams, bool]],
                    metrics: ServerMetrics, route: str) -> Generation:
        """Submit every request now, so that bad input or a full queue is an HTTP error, not a broken stream.

        ``starters`` holds (start function, params, counts_prompt) per choice; ``route`` labels the metrics. If one
        start fails, the requests already submitted are aborted and the error propagates.
        """
        choices: list[Choice] = []
        try:
            for index, (start, params, counts_prompt) in enumerate(starters):
                choices.append(Choice(index, start(params), metrics.tracker(route), counts_prompt))
        except BaseException:
            await cls(choices).aclose()
            raise
        return cls(choices)

    async def events(self) -> AsyncIterator[tuple[int, StreamEvent]]:
        source = self._single() if len(self.choices) == 1 else self._merged()
        async for index, event in source:
            choice = self.choices[index]
            choice.tracker.observe(event)
            if event.finish_reason is not None:
                counted = choice.counts_prompt
                self.usage.add(event.num_prompt_tokens if counted else 0, event.num_generated_tokens,
                               event.num_cached_tokens if counted else 0)
            yield index, event

    async def _single(self) -> AsyncIterator[tuple[int, StreamEvent]]:
        async for event in self.choices[0].stream:
            yield 0, event

    async def _merged(self) -> AsyncIterator[tuple[int, StreamEvent]]:
        # One pump task per request feeds a shared queue; None marks a finished request.
        queue: asyncio.Queue[tuple[int, StreamEvent | BaseException | None]] = asyncio.Queue()

        async def pump(choice: Choice) -> None:
            try:
                async for event in choice.stream:
                    queue.put_nowait((choice.index, event))
            except Exception as exc:  # handed to the consumer, which re-raises it
                queue.put_nowait((choice.index, exc))
            queue.put_nowait((choice.index, None))

        self._pumps = [asyncio.ensure_future(pump(choice)) for choice in self.choices]
        remaining = len(self._pumps)
        while remaining:
            index, item = await queue.get()
            if item is None:
                remaining -= 1
            elif isinstance(item, BaseException):
                raise item
            else:
                yield index, item

    async def aclose(self) -> None:
        """Abort every request still running (idempotent), whatever cancellation is pending."""
        for task in self._pumps:
            task.cancel()  # a cancelled pump aborts its stream too; aclose below makes sure
        with anyio.CancelScope(shield=True):
            for choice in self.choices:
                choice.tracker.close()
                await choice.stream.aclose()


async def run_until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """Await ``work`` unless the client disconnects first; then cancel it and raise ClientDisconnected.

    A non-streaming answer can take minutes on a CPU: a client that gave up must not keep its slot.
    """
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_wait_for_disconnect(request))
    try:
        done, _ = await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task in done:
            return task.result()
        raise ClientDisconnected()
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
                with anyio.CancelScope(shield=True):
                    await asyncio.gather(pending, return_exceptions=True)


async def _wait_for_disconnect(request: Request) -> None:
    # The body was already read by FastAPI, so the next ASGI message can only be the disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


class TokenStrings:
    """Token id -> (text, UTF-8 bytes) for logprobs; a token that is part of a character gets U+FFFD text."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.lookup = lru_cache(maxsize=65536)(self._lookup)

    def _lookup(self, token_id: int) -> tuple[str, bytes]:
        raw = _raw_token_bytes(self._tokenizer, token_id)
        return raw.decode("utf-8", errors="replace"), raw

    def text(self, token_id: int) -> str:
        return self.lookup(token_id)[0]


def _raw_token_bytes(tokenizer: Any, token_id: int) -> bytes:
    """The token's bytes from the output layer's table (specials as their text); decode() where it has none."""
    from qwen_stream.output.detokenizer import token_bytes_table

    table = token_bytes_table(tokenizer).with_special
    if 0 <= token_id < len(table) and table[token_id]:
        return table[token_id]
    return str(tokenizer.decode([token_id], skip_special_tokens=False)).encode()
