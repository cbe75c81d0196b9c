"""The one table from typed refusals to HTTP answers (server/wire/refusals.py)."""

from __future__ import annotations

import pytest

from qwen_stream.errors import (
    ContextLengthError,
    EngineError,
    EngineOverloadedError,
    InvalidParameterError,
    RequestError,
    UnknownModelError,
    UnsupportedFieldError,
    UnsupportedTaskError,
)
from qwen_stream.server.wire.errors import APIError
from qwen_stream.server.wire.refusals import refusal


@pytest.mark.parametrize(("exc", "status", "kind", "code", "param"), [
    (ContextLengthError("too long", window=8, prompt_tokens=9), 400, "invalid_request_error",
     "context_length_exceeded", None),
    (UnsupportedFieldError("echo", "not with suffix"), 400, "invalid_request_error", None, "echo"),
    (UnsupportedTaskError("no FIM tokens", code="fim_not_supported"), 400, "invalid_request_error",
     "fim_not_supported", None),
    (InvalidParameterError("temperature", "must be >= 0"), 400, "invalid_request_error", None, "temperature"),
    (RequestError("the prompt is empty", param="prompt"), 400, "invalid_request_error", None, "prompt"),
    (UnknownModelError("gpt-9", ["tiny"]), 404, "invalid_request_error", "model_not_found", "model"),
    (EngineOverloadedError("busy", retry_after_s=2.4), 429, "rate_limit_error", "engine_overloaded", None),
    (EngineError("shut down"), 503, "server_error", "engine_unavailable", None),
])
def test_each_refusal_has_its_status_type_and_code(exc: Exception, status: int, kind: str, code: str | None,
                                                   param: str | None) -> None:
    answer = refusal(exc)
    assert answer is not None
    assert (answer.status, answer.detail.type, answer.detail.code, answer.detail.param) == (status, kind, code, param)
    assert answer.detail.message == str(exc)


def test_retry_after_comes_from_the_engine() -> None:
    answer = refusal(EngineOverloadedError("busy", retry_after_s=2.4))
    assert answer is not None and answer.headers == {"Retry-After": "2"}


def test_plain_value_errors_are_bad_input_only_where_input_is_read() -> None:
    assert refusal(ValueError("a bug")) is None  # elsewhere: a bug, answered as a 500
    answer = refusal(ValueError("bad template value"), bad_input=True)
    assert answer is not None and answer.status == 400
    api = APIError(413, "too big")
    assert refusal(api) is api
