"""Typed refusals (qwen_stream/errors.py) as HTTP answers: one table of status, error type and code for every
protocol. Each protocol then renders the resulting ``APIError`` in its own shape (error_shapes.py), so a refusal
never depends on the wording of a message.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from qwen_stream.errors import (
    ContextLengthError,
    EngineError,
    EngineOverloadedError,
    RequestError,
    UnknownModelError,
    UnsupportedTaskError,
)
from qwen_stream.server.wire.errors import APIError, ErrorDetail, describe_validation_errors, error_response

log = logging.getLogger("qwen_stream.server")


def _bad_request(code: str | None = None) -> Callable[[BaseException], APIError]:
    return lambda exc: APIError(400, str(exc), "invalid_request_error", param=getattr(exc, "param", None),
                                code=code or getattr(exc, "code", None))


def _too_long(exc: BaseException) -> APIError:
    """A context overflow, with the window and the prompt's size as fields too (llama.cpp's names for them)."""
    answer = _bad_request("context_length_exceeded")(exc)
    if isinstance(exc, ContextLengthError):
        sizes = {"n_ctx": exc.window, "n_prompt_tokens": exc.prompt_tokens}
        answer = APIError(answer.status, answer.detail.message, answer.detail.type, param=answer.detail.param,
                          code=answer.detail.code, extra={k: v for k, v in sizes.items() if v is not None})
    return answer


def _overloaded(exc: BaseException) -> APIError:
    retry = exc.retry_after_s if isinstance(exc, EngineOverloadedError) else 1.0
    return APIError(429, str(exc), "rate_limit_error", code="engine_overloaded",
                    headers={"Retry-After": str(max(1, round(retry)))})


# Most specific first: the first row whose type matches answers.
REFUSALS: tuple[tuple[type[Exception], Callable[[BaseException], APIError]], ...] = (
    (ContextLengthError, _too_long),
    (UnsupportedTaskError, _bad_request()),
    (RequestError, _bad_request()),
    (UnknownModelError, lambda exc: APIError(404, str(exc), param="model", code="model_not_found")),
    (EngineOverloadedError, _overloaded),
    (EngineError, lambda exc: APIError(503, str(exc), "server_error", code="engine_unavailable")),
)


def refusal(exc: BaseException, *, bad_input: bool = False) -> APIError | None:
    """The HTTP answer for ``exc``: an ``APIError`` as it is, a typed refusal by the table; with ``bad_input`` (the
    request's own values were being read: templates, tokenizing, parameters) any ValueError or TypeError is a 400
    too. None: not a refusal (a bug: the caller lets it become a 500)."""
    if isinstance(exc, APIError):
        return exc
    for kind, answer in REFUSALS:
        if isinstance(exc, kind):
            return answer(exc)
    if bad_input and isinstance(exc, (ValueError, TypeError)):
        return APIError(400, str(exc), "invalid_request_error")
    return None


def install_error_handlers(app: FastAPI) -> None:
    """The app's handlers, answering in OpenAI's shape (routers of other protocols render their own: error_shapes.py)."""
    async def on_refusal(_request: Request, exc: Exception) -> JSONResponse:
        answer = refusal(exc)
        if answer is None:  # registered for refusals only
            raise exc
        return answer.response()

    async def on_validation_error(_request: Request, exc: Exception) -> JSONResponse:
        errors = exc.errors() if isinstance(exc, RequestValidationError) else []
        message, param = describe_validation_errors(errors)
        return error_response(400, ErrorDetail(message=message, type="invalid_request_error", param=param))

    async def on_http_error(_request: Request, exc: Exception) -> JSONResponse:
        status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
        detail = exc.detail if isinstance(exc, StarletteHTTPException) else "error"
        kind = "invalid_request_error" if status < 500 else "server_error"
        headers = getattr(exc, "headers", None)
        return error_response(status, ErrorDetail(message=str(detail), type=kind), headers)

    async def on_unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return error_response(500, ErrorDetail(message=f"internal error: {type(exc).__name__}: {exc}",
                                               type="server_error"))

    kinds: list[type[Exception]] = [APIError, *(kind for kind, _ in REFUSALS)]
    for kind in kinds:
        app.add_exception_handler(kind, on_refusal)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
