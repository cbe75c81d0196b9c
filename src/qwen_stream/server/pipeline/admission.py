"""Handing requests to the engine and getting answers back, for every route of every protocol.

Refusals become HTTP errors before any byte is sent (wire/refusals.py: bad input 400, queue full 429 with
Retry-After, engine down 503), and a client that goes away while a whole (non-streamed) answer is computed gets its
requests aborted. Each protocol renders the resulting ``APIError`` in its own error shape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from qwen_stream.client.engine_client import EngineClient
from qwen_stream.errors import EngineError
from qwen_stream.inputs.request import EngineRequest
from qwen_stream.server.metrics import ServerMetrics
from qwen_stream.server.pipeline.generation import ClientDisconnected, Generation, run_until_disconnect
from qwen_stream.server.wire.errors import APIError
from qwen_stream.server.wire.refusals import refusal

T = TypeVar("T")
# The status access logs use for "client closed the request": nobody reads this answer.
CLIENT_CLOSED = 499


async def prepare_off_loop(work: Callable[[], T]) -> T:
    """Run request preparation (parameters, templates, tokenizing) in a worker thread, so a big prompt never
    stalls the event loop (/health, other streams); refusals become their HTTP errors."""
    try:
        return await anyio.to_thread.run_sync(work)
    except Exception as exc:
        answer = refusal(exc, bad_input=True)
        if answer is None:
            raise
        raise answer from exc


def start_generation(client: EngineClient, requests: Sequence[EngineRequest], metrics: ServerMetrics,
                     route: str) -> Generation:
    """Submit every choice now (bad input 400, queue full 429, engine down 503), tracked under ``route``."""
    try:
        choices = client.start(requests)
    except Exception as exc:
        answer = refusal(exc, bad_input=True)
        if answer is None:
            raise
        raise answer from exc
    return Generation(choices, [metrics.tracker(route) for _ in requests])


async def respond_json(request: Request, work: Awaitable[T],
                       dump: Callable[[T], Any] | None = None) -> Response:
    """Await a whole answer and send it as JSON (``dump`` turns it into JSON data; pydantic models by default).

    A client that disconnects first gets its requests aborted and a 499 nobody reads.
    """
    try:
        result = await run_until_disconnect(request, work)
    except ClientDisconnected:
        return Response(status_code=CLIENT_CLOSED)
    except EngineError as exc:
        raise APIError(503, str(exc), "server_error") from exc
    if dump is not None:
        return JSONResponse(dump(result))
    if isinstance(result, BaseModel):
        return JSONResponse(result.model_dump(exclude_none=True))
    return JSONResponse(result)
