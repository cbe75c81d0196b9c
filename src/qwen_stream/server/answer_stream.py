"""One answer through a protocol's renderer: the engine's events in, that protocol's events out, either sent as
they come (a stream) or run to the end (a whole answer, which the renderer then holds). Both ways run the same
code, so a streamed answer always adds up to the whole one.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import Any, Protocol

from qwen_stream.server.generation import Generation
from qwen_stream.server.protocol import Usage
from qwen_stream.types import StreamEvent

log = logging.getLogger("qwen_stream.server")

Event = dict[str, Any]


class Renderer(Protocol):
    def start(self) -> list[Event]: ...

    def feed(self, event: StreamEvent) -> list[Event]: ...

    def finish(self, final: StreamEvent | None, usage: Usage) -> list[Event]:
        """The answer ended; ``final`` is its finishing event (None if it never finished)."""
        ...


async def render(gen: Generation, renderer: Renderer) -> AsyncGenerator[Event, None]:
    """Every event of the answer, in order; the engine request is aborted however this ends."""
    try:
        for event in renderer.start():
            yield event
        final: StreamEvent | None = None
        async for _, stream_event in gen.events():
            final = stream_event if stream_event.finished else final
            for event in renderer.feed(stream_event):
                yield event
        for event in renderer.finish(final, gen.usage):
            yield event
    finally:
        await gen.aclose()


async def frames(events: AsyncGenerator[Event, None], encode: Callable[[Event], bytes],
                 failed: Callable[[str], list[Event]]) -> AsyncIterator[bytes]:
    """The events as wire frames. An error after the headers went out can only travel as events: ``failed``
    makes them from the message."""
    try:
        async for event in events:
            yield encode(event)
    except Exception as exc:
        log.error("stream failed: %s: %s", type(exc).__name__, exc)
        for event in failed(f"generation failed: {type(exc).__name__}: {exc}"):
            yield encode(event)
    finally:
        await events.aclose()


async def run_to_end(events: AsyncGenerator[Event, None]) -> None:
    """Drive the answer to its end without sending anything (the renderer then holds the whole answer)."""
    try:
        async for _ in events:
            pass
    finally:
        await events.aclose()
