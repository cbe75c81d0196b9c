"""Errors in each protocol's own shape on that protocol's routes.

The app's handlers answer in OpenAI's shape (``{"error": {"message", "type", ...}}``). Anthropic's clients expect
``{"type": "error", "error": {"type", "message"}}`` and Ollama's ``{"error": "message"}``, so a router for those
routes uses ``shaped_route(render)`` as its route class: every error raised while handling one of its requests
(the body failing validation, a missing API key, a refusal, a bug) is answered by ``render`` instead. Errors
after a stream has started travel inside the stream, in each protocol's own event. ``error_responses`` declares a
shape in the OpenAPI document, so clients (and schemathesis) can check every route's errors against it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from qwen_stream.server.pipeline.limits import ErrorRenderer
from qwen_stream.server.wire.errors import describe_validation_errors
from qwen_stream.server.wire.refusals import refusal

log = logging.getLogger("qwen_stream.server")

Handler = Callable[[Request], Coroutine[Any, Any, Response]]
# Every status a route may answer with besides 200: bad input, no key, unknown model, too big, queue full, bug,
# loading or draining.
ERROR_STATUSES = (400, 401, 404, 413, 429, 500, 503)


def error_responses(shape: type[BaseModel]) -> dict[int | str, dict[str, Any]]:
    """FastAPI ``responses=``: every error status answers with a body of ``shape``."""
    return {status: {"model": shape} for status in ERROR_STATUSES}


def shaped_route(render: ErrorRenderer) -> type[APIRoute]:
    """An APIRoute class whose errors are rendered by ``render``."""

    class ShapedRoute(APIRoute):
        def get_route_handler(self) -> Handler:
            handler = super().get_route_handler()

            async def shaped(request: Request) -> Response:
                try:
                    return await handler(request)
                except Exception as exc:  # every error of this route answers in the route's own shape
                    return render_error(render, exc)

            return shaped

    return ShapedRoute


def render_error(render: ErrorRenderer, exc: Exception) -> Response:
    answer = refusal(exc)
    if answer is not None:
        return render(answer.status, answer.detail.message, answer.detail.type, answer.headers)
    if isinstance(exc, RequestValidationError):
        message, _ = describe_validation_errors(exc.errors())
        return render(400, message, "invalid_request_error", {})
    if isinstance(exc, StarletteHTTPException):
        kind = "invalid_request_error" if exc.status_code < 500 else "server_error"
        return render(exc.status_code, str(exc.detail), kind, exc.headers or {})
    log.exception("unhandled error", exc_info=exc)
    return render(500, f"internal error: {type(exc).__name__}: {exc}", "server_error", {})
