"""The API key check every protected route shares: ``Authorization: Bearer KEY`` (OpenAI, Ollama clients) or
``x-api-key: KEY`` (Anthropic's clients), compared in constant time."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping

from starlette.requests import Request

from qwen_stream.server.wire.errors import APIError

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key the client sent, from ``Authorization: Bearer`` or else ``x-api-key``; None if neither."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None


def check_api_key(expected: str | None, headers: Mapping[str, str]) -> None:
    """Raise a 401 ``APIError`` unless the request carries ``expected`` (no key configured: every request passes)."""
    if expected is None:
        return
    key = presented_key(headers)
    if key is None:
        raise APIError(401, "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
                       "invalid_request_error", code="invalid_api_key", headers=_CHALLENGE)
    # compare_digest: the time taken must not reveal how much of the key was right.
    if not hmac.compare_digest(key.encode(), expected.encode()):
        raise APIError(401, "incorrect API key provided", "invalid_request_error", code="invalid_api_key",
                       headers=_CHALLENGE)


def api_key_dependency(expected: str | None) -> Callable[[Request], None]:
    """A FastAPI dependency that checks the key on every request of a router."""

    # A plain closure, not functools.partial: FastAPI resolves the string annotations through __globals__.
    def check(request: Request) -> None:
        check_api_key(expected, request.headers)

    return check
