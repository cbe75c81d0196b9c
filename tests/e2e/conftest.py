"""Real models the end-to-end tests share: each is loaded once per session for every file that uses it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.real_runners import QWEN_CODER, QWEN_CODER_RUNNER


@pytest.fixture(scope="session")
def qwen_coder() -> Iterator[Any]:
    """Qwen2.5-Coder-1.5B-Instruct with 2 slots and a 2048-token window: the tool tests of the Python API, the
    OpenAI conversation and each protocol's tool round trip (tests/e2e) all run on this one load."""
    from qwen_stream.api import ChatModel

    with ChatModel.load(QWEN_CODER, max_batch_size=2, context_length=2048, progress=False,
                        **QWEN_CODER_RUNNER) as model:
        yield model
