"""Errors in llama.cpp's shape on its routes: ``{"error": {"code": 400, "message", "type"}}``, with a context
overflow typed ``exceed_context_size_error`` and carrying ``n_ctx`` and ``n_prompt_tokens``, as llama-server sends
them (clients read those to shorten and retry)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from qwen_stream.server.wire.error_shapes import Handler, render_error
from qwen_stream.server.wire.errors import APIError
from qwen_stream.server.wire.refusals import refusal

# HTTP status -> llama-server's error type
_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error", 404: "not_found_error",
          501: "not_supported_error", 503: "unavailable_error"}


def llama_error(status: int, message: str, _kind: str, headers: Mapping[str, str],
                extra: Mapping[str, Any] | None = None) -> Response:
    kind = _TYPES.get(status, "invalid_request_error" if status < 500 else "server_error")
    body = {"code": status, "message": message, "type": kind, **dict(extra or {})}
    return JSONResponse({"error": body}, status_code=status, headers=dict(headers))


def llama_answer(answer: APIError) -> Response:
    """A refusal in llama.cpp's shape; a context overflow as ``exceed_context_size_error``."""
    sizes = {k: v for k, v in (answer.detail.model_extra or {}).items() if k in ("n_ctx", "n_prompt_tokens")}
    response = llama_error(answer.status, answer.detail.message, answer.detail.type, answer.headers, sizes)
    if answer.detail.code == "context_length_exceeded":
        body = {"error": {"code": answer.status, "message": answer.detail.message,
                          "type": "exceed_context_size_error", **sizes}}
        response = JSONResponse(body, status_code=answer.status, headers=answer.headers)
    return response


class LlamaRoute(APIRoute):
    """A route whose every error (bad body, refusal, missing key, bug) answers in llama.cpp's shape."""

    def get_route_handler(self) -> Handler:
        handler = super().get_route_handler()

        async def shaped(request: Request) -> Response:
            try:
                return await handler(request)
            except Exception as exc:
                answer = refusal(exc)
                return llama_answer(answer) if answer is not None else render_error(llama_error, exc)

        return shaped
