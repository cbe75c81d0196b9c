"""The OpenAI-compatible HTTP server (`qwen-stream serve`).

``create_app`` is imported lazily so that `qwen-stream --help` does not pay for FastAPI.
"""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from qwen_stream.server.app import create_app

        return create_app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
