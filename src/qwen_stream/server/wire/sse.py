"""Server-sent events as OpenAI sends them: ``data: {json}\\n\\n`` frames, ending with ``data: [DONE]``."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import anyio
from pydantic import BaseModel
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from qwen_stream.server.wire.errors import error_payload

log = logging.getLogger("qwen_stream.server")

DONE = b"data: [DONE]\n\n"


def sse_frame(payload: BaseModel | str) -> bytes:
    """One SSE event carrying a JSON object (a pydantic model is dumped as JSON)."""
    data = payload if isinstance(payload, str) else payload.model_dump_json()
    return f"data: {data}\n\n".encode()


def stream_error_frame(exc: Exception) -> bytes:
    """An error raised after the response started: sent as an ``{"error": ...}`` event (the OpenAI client raises
    it as an APIError)."""
    log.error("stream failed: %s: %s", type(exc).__name__, exc)
    return sse_frame(error_payload(f"generation failed: {type(exc).__name__}: {exc}", "server_error"))


class SSEResponse(StreamingResponse):
    """A streaming response that always closes its generator, however the stream ends.

    Starlette cancels the sending task when the client disconnects; a generator suspended at ``yield`` at that
    moment would otherwise be closed only when garbage collected, leaving its request running in the engine.
    Closing it here runs its ``finally`` (which aborts the request) at once.
    """

    media_type = "text/event-stream"

    def __init__(self, content: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> None:
        sse_headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})}
        super().__init__(content, headers=sse_headers, media_type=self.media_type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await close_quietly(self.body_iterator)


async def close_quietly(iterator: Any) -> None:
    """``aclose()`` an async generator, shielded so a pending cancellation cannot skip the cleanup."""
    if isinstance(iterator, AsyncGenerator):
        with anyio.CancelScope(shield=True):
            await iterator.aclose()


def sse_event(name: str, data: dict[str, Any]) -> bytes:
    """One named SSE event (``event: NAME``), as the Responses and Anthropic streams send them."""
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()
