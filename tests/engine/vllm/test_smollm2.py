"""`--backend vllm` end to end with a real small model: SmolLM2-135M's GGUF alias, converted once to a Hugging Face
checkpoint and served by vLLM; the Python API's chat_stream and the OpenAI server (official client) on top."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from qwen_stream.engine.vllm.backend import vllm_available
from tests.support.live_server import LiveServer

pytestmark = [pytest.mark.slow, pytest.mark.vllm,
              pytest.mark.skipif(not vllm_available(), reason="vllm is not installed (it lives in .venv-vllm)")]

QUESTION = "What is the capital of France? Answer in English."


@pytest.fixture(scope="module")
def smollm2_vllm() -> Iterator[Any]:
    from qwen_stream.api import ChatModel

    model = ChatModel.load("smollm2-135m", backend="vllm", max_batch_size=2, max_waiting=1, context_length=1024,
                           progress=False)
    try:
        yield model
    finally:
        model.close()


@pytest.fixture(scope="module")
def server(smollm2_vllm: Any) -> Iterator[LiveServer]:
    from qwen_stream.server.app import create_app

    with LiveServer(create_app(smollm2_vllm)) as live:
        yield live


def test_chat_stream_answers_with_growing_text(smollm2_vllm: Any) -> None:
    assert smollm2_vllm.engine.name == "vllm"
    texts = list(smollm2_vllm.chat_stream(QUESTION, temperature=0, max_new_tokens=24))
    assert len(texts) > 1 and all(b.startswith(a) for a, b in itertools.pairwise(texts))
    assert "Paris" in texts[-1], texts[-1]


def test_openai_client_streams_the_same_text_as_the_whole_answer(server: LiveServer) -> None:
    import openai

    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=300)
    args: dict[str, Any] = {"model": "smollm2-135m", "max_tokens": 24, "temperature": 0,
                            "messages": [{"role": "user", "content": QUESTION}]}
    whole = client.chat.completions.create(**args)
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **args)
                       if c.choices)
    assert whole.choices[0].message.content == streamed and "Paris" in streamed
    assert whole.usage is not None and whole.usage.completion_tokens > 0


def test_a_full_server_answers_429_with_retry_after_and_recovers(server: LiveServer, smollm2_vllm: Any) -> None:
    body = {"model": "smollm2-135m", "max_tokens": 900, "temperature": 0, "ignore_eos": True, "stream": True,
            "messages": [{"role": "user", "content": "Tell me a long story."}]}
    capacity = smollm2_vllm.engine.max_running + smollm2_vllm.engine.max_waiting
    stop = threading.Event()

    def hold() -> None:  # a streaming client that reads until told to hang up
        with httpx.Client(timeout=300) as client, client.stream("POST", f"{server.url}/v1/chat/completions",
                                                                json=body) as response:
            for _ in response.iter_lines():
                if stop.is_set():
                    return

    holders = [threading.Thread(target=hold) for _ in range(capacity)]
    for thread in holders:
        thread.start()
    try:
        deadline = time.monotonic() + 120
        while smollm2_vllm.engine.num_unfinished < capacity and time.monotonic() < deadline:
            time.sleep(0.05)
        refused = httpx.post(f"{server.url}/v1/chat/completions", json=dict(body, stream=False), timeout=30)
        assert refused.status_code == 429 and float(refused.headers["Retry-After"]) > 0
    finally:
        stop.set()
        for thread in holders:
            thread.join(120)
    deadline = time.monotonic() + 60  # the disconnected clients' requests are aborted in vLLM
    while smollm2_vllm.engine.num_unfinished and time.monotonic() < deadline:
        time.sleep(0.05)
    assert smollm2_vllm.engine.num_unfinished == 0
