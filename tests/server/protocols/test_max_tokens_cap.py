"""``--max-tokens-cap`` holds on every route, for a request without a length and for one asking more: OpenAI chat
and completions (with and without /v1), llama.cpp's /completion, Ollama, Anthropic, Responses on the tiny model;
/infill and /v1/completions with ``suffix`` on Qwen2.5-Coder (slow: fill-in-the-middle needs its FIM tokens)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from qwen_stream.server.app import create_app
from tests.support.live_server import LiveServer

CAP = 5
ASK = [{"role": "user", "content": "Tell me a long story."}]


@pytest.fixture(scope="module")
def capped(tiny_chat_model: Any) -> Iterator[httpx.Client]:
    with LiveServer(create_app(tiny_chat_model, served_model_name="m", max_tokens_cap=CAP)) as live, \
            httpx.Client(base_url=live.url, timeout=60) as http:
        yield http


def generated(http: httpx.Client, route: str, body: dict[str, Any]) -> int:
    """The answer's length in tokens, as the route's own usage fields say."""
    response = http.post(route, json=body)
    assert response.status_code == 200, response.text
    data = response.json()
    if route.endswith("completions") or route == "/completion":
        return int(data["usage"]["completion_tokens"] if "usage" in data else data["tokens_predicted"])
    if route.startswith("/api/"):
        return int(data["eval_count"])
    return int(data["usage"]["output_tokens"])  # Anthropic and Responses


@pytest.mark.parametrize(("route", "body", "exact"), [
    ("/v1/chat/completions", {"messages": ASK, "ignore_eos": True}, True),
    ("/chat/completions", {"messages": ASK, "max_tokens": 50, "ignore_eos": True}, True),
    ("/v1/completions", {"prompt": "Once upon a time", "ignore_eos": True}, True),
    ("/completions", {"prompt": "Once upon a time", "max_tokens": 50, "ignore_eos": True}, True),
    ("/completion", {"prompt": "Once upon a time", "n_predict": -1, "ignore_eos": True}, True),
    ("/completion", {"prompt": "Once upon a time", "n_predict": 50, "ignore_eos": True}, True),
    ("/api/chat", {"model": "m", "messages": ASK, "stream": False}, False),
    ("/api/generate", {"model": "m", "prompt": "Hi", "stream": False, "options": {"num_predict": 50}}, False),
    ("/v1/messages", {"model": "m", "messages": ASK, "max_tokens": 50}, False),
    ("/v1/responses", {"input": "Tell me a long story."}, False),
    ("/v1/responses", {"input": "Tell me a long story.", "max_output_tokens": 50}, False),
])
def test_the_cap_holds_with_or_without_a_length(capped: httpx.Client, route: str, body: dict[str, Any],
                                                exact: bool) -> None:
    count = generated(capped, route, body)
    assert (count == CAP) if exact else (0 < count <= CAP), count


def test_an_answer_cut_at_the_cap_says_length(capped: httpx.Client) -> None:
    body = {"messages": ASK, "max_tokens": 50, "ignore_eos": True}
    assert capped.post("/v1/chat/completions", json=body).json()["choices"][0]["finish_reason"] == "length"


@pytest.mark.slow
def test_the_cap_holds_on_fill_in_the_middle_routes() -> None:
    from qwen_stream.api import ChatModel

    with ChatModel.load("qwen2.5-coder-0.5b", max_batch_size=2, context_length=1024, progress=False) as model, \
            LiveServer(create_app(model, served_model_name="coder", max_tokens_cap=CAP)) as live, \
            httpx.Client(base_url=live.url, timeout=300) as http:
        gap = {"input_prefix": "def fib(n):\n", "input_suffix": "\n\nprint(fib(10))\n", "temperature": 0}
        for n_predict in (-1, 200):
            infill = http.post("/infill", json={**gap, "n_predict": n_predict}).json()
            assert 0 < infill["tokens_predicted"] <= CAP, infill
        for extra in ({}, {"max_tokens": 200}):
            body = {"prompt": "def fib(n):\n", "suffix": "\n\nprint(fib(10))\n", "temperature": 0, **extra}
            middle = http.post("/v1/completions", json=body).json()
            assert 0 < middle["usage"]["completion_tokens"] <= CAP, middle
