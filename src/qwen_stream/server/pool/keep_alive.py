"""Ollama's ``keep_alive``: how long a model stays loaded after a request, as seconds.

Ollama takes a number of seconds or a Go duration string ("5m", "1h30m", "90s", "500ms", "-1m"); 0 unloads the
model once the request is done, a negative value keeps it loaded for good (``math.inf`` here).
"""

from __future__ import annotations

import math
import re

from qwen_stream.server.wire.errors import APIError

_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")
FOREVER = math.inf


def parse_duration(text: str) -> float:
    """Seconds in a Go duration ("5m", "1h30m", "-1s") or a bare number of seconds ("300"); negative -> inf.

    Raises ValueError for anything else."""
    raw = text.strip()
    try:
        return _seconds(float(raw))
    except ValueError:
        pass
    sign, body = (-1.0, raw[1:]) if raw.startswith("-") else (1.0, raw.lstrip("+"))
    parts = _PART.findall(body)
    if not body or "".join(number + unit for number, unit in parts) != body:
        raise ValueError(f'expected a duration such as "5m", "1h30m", "90s" or a number of seconds, got {text!r}')
    return _seconds(sign * sum(float(number) * _UNITS[unit] for number, unit in parts))


def _seconds(value: float) -> float:
    if math.isnan(value):
        raise ValueError("a duration cannot be NaN")
    return FOREVER if value < 0 else value


def keep_alive_seconds(value: float | str | None) -> float | None:
    """A request's ``keep_alive`` in seconds (None: the server's default); a bad value is a 400 naming the field."""
    if value is None:
        return None
    try:
        return parse_duration(value) if isinstance(value, str) else _seconds(float(value))
    except ValueError as exc:
        raise APIError(400, f"keep_alive: {exc}", "invalid_request_error", param="keep_alive") from exc
