"""Bounded work per request, decided before any of it is done: body size, stop strings, text that cannot be encoded.

A request body is read whole by FastAPI, then parsed, then tokenized: without a limit one 50 MB body held gigabytes
and the event loop for a minute. The body limit is enforced as the bytes arrive (a lying or absent Content-Length
cannot get past it), so memory taken by a refused request stays bounded and is given back at once.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from qwen_stream.server.wire.errors import APIError, ErrorDetail, error_response

# (status, message, OpenAI-style error type, headers) -> a protocol's error response (error_shapes.ErrorRenderer)
ErrorRenderer = Callable[[int, str, str, Mapping[str, str]], Response]
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(slots=True, frozen=True)
class RequestLimits:
    """What one request may ask for; every value is a ``qwen-stream serve`` flag."""

    max_body_bytes: int = 8 * 1024 * 1024
    max_stop_strings: int = 16
    max_stop_chars: int = 1024  # per stop string

    def check_stops(self, items: Sequence[str] | None) -> None:
        if not items:
            return
        if len(items) > self.max_stop_strings:
            raise APIError(400, f"stop: at most {self.max_stop_strings} stop strings, got {len(items)}",
                           param="stop")
        longest = max((len(s) for s in items), default=0)
        if longest > self.max_stop_chars:
            raise APIError(400, f"stop: a stop string may have at most {self.max_stop_chars} characters, "
                           f"got {longest}", param="stop")


def check_encodable(data: object) -> None:
    """Refuse text with a lone UTF-16 surrogate anywhere in a JSON body (JSON allows ``"\\ud800"``, Unicode text
    does not): a 400 naming the field by its dotted path (``messages.0.content``), whatever the protocol."""
    pending: list[tuple[str, object]] = [("", data)]  # a stack, not recursion: bodies may nest deeply
    while pending:
        path, value = pending.pop()
        if isinstance(value, str):
            _check_text(path or "body", value)
        elif isinstance(value, dict):
            for key in value:
                _check_text(path or "body", key)
            pending += [(f"{path}.{k}" if path else str(k), v) for k, v in reversed(value.items())]
        elif isinstance(value, list):
            pending += [(f"{path}.{i}" if path else str(i), v) for i, v in reversed(list(enumerate(value)))]


def _check_text(where: str, text: str) -> None:
    found = _SURROGATE.search(text)
    if found is not None:
        raise APIError(400, f"{where}: invalid text: a lone surrogate \\u{ord(found.group()):04x} at character "
                       f"{found.start()} is not a Unicode character (fix the client's string encoding)",
                       param=where, code="invalid_text")


class BodySizeLimit:
    """ASGI middleware: a request body over ``max_bytes`` gets 413 before the app sees any of it."""

    def __init__(self, app: ASGIApp, max_bytes: int, shapes: Sequence[tuple[str, ErrorRenderer]] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.shapes = shapes  # (path prefix, error renderer): the protocols whose errors are not OpenAI-shaped

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(scope, send)  # without reading a byte of it
            return
        body = await self._read(receive)
        if body is None:
            await self._refuse(scope, send)
            return
        await self.app(scope, _replay(body, receive), send)

    async def _read(self, receive: Receive) -> list[Message] | None:
        """The request's body messages, or None once they exceed the limit (what was read is dropped)."""
        messages: list[Message] = []
        size = 0
        while True:
            message = await receive()
            messages.append(message)
            if message["type"] != "http.request":
                return messages  # a disconnect: let the app see it
            size += len(message.get("body", b""))
            if size > self.max_bytes:
                return None
            if not message.get("more_body", False):
                return messages

    async def _refuse(self, scope: Scope, send: Send) -> None:
        message = f"request body too large: the limit is {self.max_bytes} bytes (qwen-stream serve --max-request-bytes)"
        headers = {"Connection": "close"}
        path = str(scope.get("path", ""))
        render = next((r for prefix, r in self.shapes if path.startswith(prefix)), None)
        if render is not None:
            response = render(413, message, "invalid_request_error", headers)
        else:
            detail = ErrorDetail(message=message, type="invalid_request_error", code="request_too_large")
            response = error_response(413, detail, headers)
        await response(scope, _no_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def _replay(messages: list[Message], receive: Receive) -> Receive:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()  # after the body: the disconnect, when it comes

    return replayed


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
