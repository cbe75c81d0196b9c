"""OpenAI-style errors: every failure is ``{"error": {"message", "type", "param", "code"}}`` with a 4xx/5xx.

FastAPI answers bad bodies with 422 and its own shape; OpenAI clients expect 400 and the shape above, so the
validation handler is replaced. Malformed JSON arrives as a validation error too (type ``json_invalid``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

log = logging.getLogger("qwen_stream.server")


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")

    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


class APIError(Exception):
    """An error to answer with: HTTP status, OpenAI error type/param/code, extra headers (Retry-After, ...)."""

    def __init__(self, status: int, message: str, type_: str = "invalid_request_error", *, param: str | None = None,
                 code: str | None = None, headers: Mapping[str, str] | None = None,
                 extra: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        # extra: more fields of the error object (a context overflow's n_ctx and n_prompt_tokens, as llama.cpp's)
        self.detail = ErrorDetail(message=message, type=type_, param=param, code=code, **dict(extra or {}))
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return error_response(self.status, self.detail, self.headers)


def error_response(status: int, detail: ErrorDetail, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse(ErrorResponse(error=detail).model_dump(), status_code=status, headers=dict(headers or {}))


def error_payload(message: str, type_: str = "server_error", code: str | None = None) -> str:
    """The JSON of an error body, for an error that happens after a stream has started (sent as an SSE event)."""
    return ErrorResponse(error=ErrorDetail(message=message, type=type_, code=code)).model_dump_json()


def describe_validation_errors(errors: Sequence[Any]) -> tuple[str, str | None]:
    """A readable message and the offending parameter (dotted path, without the leading "body")."""
    parts = []
    first_param: str | None = None
    for error in errors:
        if error.get("type") == "json_invalid":
            ctx = error.get("ctx") or {}
            return f"malformed JSON body: {ctx.get('error', 'could not parse')}", None
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        param = ".".join(loc) or None
        first_param = first_param or param
        message = str(error.get("msg", "invalid value"))
        if error.get("type") == "missing":
            message = "field required"
        parts.append(f"{param}: {message}" if param else message)
    if not parts:
        return "invalid request body", None
    return "invalid request: " + "; ".join(parts), first_param
