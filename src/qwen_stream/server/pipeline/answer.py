"""One request's answers through its protocol's renderer: the engine's events in, that protocol's events out,
either sent as they come (a stream) or run to the end and folded into the whole answer (which the renderer then
holds). Both ways run the same code, so a streamed answer always adds up to the whole one, for every protocol.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from qwen_stream.server.pipeline.admission import respond_json
from qwen_stream.server.pipeline.generation import Generation
from qwen_stream.server.wire.sse import SSEResponse
from qwen_stream.types import StreamEvent

if TYPE_CHECKING:
    from qwen_stream.client.choices import TokenUsage

log = logging.getLogger("qwen_stream.server")

Event = dict[str, Any]
E = TypeVar("E")
E_co = TypeVar("E_co", covariant=True)


class Renderer(Protocol[E_co]):
    def start(self) -> Sequence[E_co]: ...

    def feed(self, event: StreamEvent, index: int = 0) -> Sequence[E_co]:
        """An engine event of choice ``index`` (always 0 but for OpenAI's ``n`` and prompt lists)."""
        ...

    def finish(self, final: StreamEvent | None, usage: TokenUsage) -> Sequence[E_co]:
        """The answer ended; ``final`` is its (last) finishing event (None if it never finished)."""
        ...

    def whole(self) -> Any:
        """The whole answer as JSON data, folded from every event the renderer returned."""
        ...


@dataclass(slots=True, frozen=True)
class Wire(Generic[E]):
    """How a protocol sends its events when streamed."""

    encode: Callable[[E], bytes]
    failed: Callable[[str], Sequence[E]]  # the events for an error after the headers went out
    end: bytes = b""  # sent after the events however the stream ends (OpenAI's data: [DONE])
    response: type[SSEResponse] = SSEResponse


async def answer(request: Request, gen: Generation, renderer: Renderer[E], wire: Wire[E], *,
                 stream: bool) -> Response:
    """The response: the events streamed, or the whole answer as JSON once they all ran (client gone: 499)."""
    events = render(gen, renderer)
    if stream:
        return wire.response(frames(events, wire))
    return await respond_json(request, _whole(events, renderer))


async def render(gen: Generation, renderer: Renderer[E]) -> AsyncGenerator[E, None]:
    """Every event of the answers, in order; the engine requests are aborted however this ends."""
    try:
        for event in renderer.start():
            yield event
        final: StreamEvent | None = None
        async for index, stream_event in gen.events():
            final = stream_event if stream_event.finished else final
            for event in renderer.feed(stream_event, index):
                yield event
        for event in renderer.finish(final, gen.usage):
            yield event
    finally:
        await gen.aclose()


async def frames(events: AsyncGenerator[E, None], wire: Wire[E]) -> AsyncIterator[bytes]:
    """The events as wire frames. An error after the headers went out can only travel as events."""
    try:
        async for event in events:
            yield wire.encode(event)
    except Exception as exc:
        log.error("stream failed: %s: %s", type(exc).__name__, exc)
        for event in wire.failed(f"generation failed: {type(exc).__name__}: {exc}"):
            yield wire.encode(event)
    finally:
        await events.aclose()
    if wire.end:
        yield wire.end


async def run_to_end(events: AsyncGenerator[Any, None]) -> None:
    """Drive the answer to its end without sending anything (the renderer then holds the whole answer)."""
    try:
        async for _ in events:
            pass
    finally:
        await events.aclose()


async def _whole(events: AsyncGenerator[E, None], renderer: Renderer[E]) -> Any:
    await run_to_end(events)
    return renderer.whole()
