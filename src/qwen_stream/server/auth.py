"""The API key check every protected route shares: ``Authorization: Bearer KEY`` (OpenAI, Ollama clients) or
``x-api-key: KEY`` (Anthropic's clients), against one key or several (``serve --api-key`` repeated,
``--api-key-file``), compared in constant time. Keys are never logged or echoed in an error."""

from __future__ import annotations

import hmac
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from starlette.requests import Request

from qwen_stream.server.wire.errors import APIError

_CHALLENGE = {"WWW-Authenticate": "Bearer"}


def api_keys(keys: str | Sequence[str] | None) -> tuple[str, ...]:
    """The keys a server accepts (none: every request passes), each stripped; an empty one is an error."""
    listed = [keys] if isinstance(keys, str) else list(keys or ())
    stripped = tuple(key.strip() for key in listed)
    if any(not key for key in stripped):
        raise ValueError("an API key must not be empty")
    return stripped


def read_key_file(path: str | Path) -> list[str]:
    """One key per line; blank lines and lines starting with ``#`` are skipped (a file keeps keys out of ``ps``)."""
    lines = Path(path).read_text(encoding="utf-8").splitlines()
    keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        raise ValueError(f"--api-key-file {path} holds no key")
    return keys


def presented_key(headers: Mapping[str, str]) -> str | None:
    """The key the client sent, from ``Authorization: Bearer`` or else ``x-api-key``; None if neither."""
    scheme, _, token = headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None


def check_api_key(expected: Sequence[str], headers: Mapping[str, str]) -> None:
    """Raise a 401 ``APIError`` unless the request carries one of ``expected`` (none configured: all pass)."""
    if not expected:
        return
    key = presented_key(headers)
    if key is None:
        raise APIError(401, "missing API key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'",
                       "invalid_request_error", code="invalid_api_key", headers=_CHALLENGE)
    # compare_digest against every key, always: the time taken must not reveal which key, or how much of one, matched.
    matches = [hmac.compare_digest(key.encode(), candidate.encode()) for candidate in expected]
    if not any(matches):
        raise APIError(401, "incorrect API key provided", "invalid_request_error", code="invalid_api_key",
                       headers=_CHALLENGE)


def api_key_dependency(expected: Sequence[str]) -> Callable[[Request], None]:
    """A FastAPI dependency that checks the key on every request of a router."""

    # A plain closure, not functools.partial: FastAPI resolves the string annotations through __globals__.
    def check(request: Request) -> None:
        check_api_key(expected, request.headers)

    return check
