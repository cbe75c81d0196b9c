"""What every generating endpoint shares: a request's choices (client/choices.py) with each one's metrics tracked,
and a client that goes away while a whole (non-streamed) answer is computed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import TypeVar

import anyio
from starlette.requests import Request

from qwen_stream.client.choices import Choices, TokenUsage
from qwen_stream.server.metrics import RequestTracker
from qwen_stream.types import StreamEvent

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client went away before a non-streaming answer was ready; its requests were aborted."""


class Generation:
    """The engine requests of one HTTP request; ``events()`` yields ``(choice index, event)`` as they come."""

    def __init__(self, choices: Choices, trackers: list[RequestTracker]) -> None:
        self.choices = choices
        self.trackers = trackers

    @property
    def usage(self) -> TokenUsage:
        return self.choices.usage

    async def events(self) -> AsyncIterator[tuple[int, StreamEvent]]:
        async for index, event in self.choices.events():
            self.trackers[index].observe(event)
            yield index, event

    async def aclose(self) -> None:
        """Abort every request still running (idempotent), whatever cancellation is pending."""
        with anyio.CancelScope(shield=True):
            for tracker in self.trackers:
                tracker.close()
        await self.choices.aclose()


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
