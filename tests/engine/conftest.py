"""Fixtures shared by the engine tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def gguf_path() -> Path:
    pytest.importorskip("llama_cpp")
    from qwen_stream.models.registry import ensure_alias

    return ensure_alias("smollm2-135m", progress=False)
