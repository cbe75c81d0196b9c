"""Which models an HTTP request is using, for as long as it runs: a model is never unloaded under a request.

``ModelLeases`` (ASGI middleware) opens a scope per request; the pool adds the entry it hands out to that scope
(``hold``) and the middleware gives every lease back when the ASGI call returns, which is after the last byte of
a streamed answer was sent (or the client went away). So a stream is never cut by an unload: the unload waits
for the lease, not for a guess about when the request ends.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

_LEASES: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar("qwen_stream_model_leases", default=None)


def hold(entry: Any) -> bool:
    """Record that the current request uses ``entry``; False outside a request scope (nothing to hold it)."""
    leases = _LEASES.get()
    if leases is None:
        return False
    leases.append(entry)
    return True


class ModelLeases:
    """ASGI middleware: each HTTP request's leases are returned through ``release`` when the request ends."""

    def __init__(self, app: ASGIApp, release: Callable[[Any], None]) -> None:
        self.app = app
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        leases: list[Any] = []
        token = _LEASES.set(leases)
        try:
            await self.app(scope, receive, send)
        finally:
            _LEASES.reset(token)
            for entry in leases:
                self.release(entry)
