"""Handing requests to the engine and getting answers back, for every route of every protocol.

Refusals become HTTP errors before any byte is sent (bad input 400, queue full 429 with Retry-After, engine down
503), and a client that goes away while a whole (non-streamed) answer is computed gets its requests aborted.
Each protocol renders the resulting ``APIError`` in its own error shape.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response

from qwen_stream.errors import EngineError, EngineOverloadedError, InvalidParameterError
from qwen_stream.server.metrics import ServerMetrics
from qwen_stream.server.pipeline.generation import ClientDisconnected, Generation, StreamStarter, run_until_disconnect
from qwen_stream.server.wire.errors import APIError
from qwen_stream.types import SamplingParams

if TYPE_CHECKING:
    from qwen_stream.api import ChatModel, PreparedRequest

T = TypeVar("T")
Starter = tuple[StreamStarter, SamplingParams, bool]
# The status access logs use for "client closed the request": nobody reads this answer.
CLIENT_CLOSED = 499


async def prepare_off_loop(work: Callable[[], T]) -> T:
    """Run request preparation (parameters, templates, tokenizing) in a worker thread, so a big prompt never
    stalls the event loop (/health, other streams); bad values become a 400 naming the field."""
    try:
        return await anyio.to_thread.run_sync(work)
    except InvalidParameterError as exc:
        raise APIError(400, str(exc), "invalid_request_error", param=exc.param) from exc
    except (ValueError, TypeError) as exc:
        code = "context_length_exceeded" if "context window" in str(exc) else None
        raise APIError(400, str(exc), "invalid_request_error", code=code) from exc


def stream_of(model: ChatModel, prepared: PreparedRequest, *, chat: bool = True) -> StreamStarter:
    """A starter for ``start_generation`` from a prepared request (which already holds its params): a
    conversation (``prepare_chat``) or, with ``chat=False``, a raw prompt (``prepare_completion``)."""
    if chat:
        return lambda _params: model.astream_prepared(prepared)
    return lambda _params: model.acomplete_prepared(prepared)


async def start_generation(starters: Sequence[Starter], metrics: ServerMetrics, route: str) -> Generation:
    """Submit the requests, mapping refusals to HTTP errors (bad input 400, queue full 429, engine down 503)."""
    try:
        return await Generation.start(starters, metrics, route)
    except EngineOverloadedError as exc:
        retry = str(max(1, round(exc.retry_after_s)))
        raise APIError(429, str(exc), "rate_limit_error", code="engine_overloaded",
                       headers={"Retry-After": retry}) from exc
    except EngineError as exc:
        raise APIError(503, str(exc), "server_error", code="engine_unavailable") from exc
    except (ValueError, TypeError) as exc:
        code = "context_length_exceeded" if "context window" in str(exc) else None
        raise APIError(400, str(exc), "invalid_request_error", code=code) from exc


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
