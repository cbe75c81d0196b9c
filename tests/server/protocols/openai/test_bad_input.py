"""Bad requests get a 4xx with an OpenAI-style error body, never a 5xx, and the server keeps serving."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

GOOD = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0}


def with_(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


def assert_error(response: httpx.Response, status: int, *, mentions: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) >= {"message", "type", "param", "code"}
    assert error["message"]
    if mentions is not None:
        assert mentions in error["message"] or mentions == error["param"], error
    return error


@pytest.mark.parametrize(("body", "mentions"), [
    (with_(temperature="hot"), "temperature"),
    (with_(max_tokens="5"), "max_tokens"),
    (with_(max_tokens=2.5), "max_tokens"),
    (with_(stream="yes"), "stream"),
    (with_(messages="hi"), "messages"),
    (with_(messages=[{"role": "robot", "content": "hi"}]), "messages.0.role"),
    (with_(messages=[{"content": "hi"}]), "messages.0.role"),
    (with_(stop=[1, 2]), "stop"),
    (with_(n=0), "n"),
    (with_(messages=[]), "messages"),
    (with_(max_tokens=0), "max_tokens"),
    (with_(max_tokens=-1), "max_tokens"),
    (with_(max_completion_tokens=0), "max_completion_tokens"),
    (with_(top_logprobs=2), "top_logprobs"),
    (with_(temperature=-1.0), "temperature"),
    (with_(top_p=0.0), "top_p"),
    (with_(stop=""), "stop"),
    (with_(messages=[{"role": "assistant", "content": "I answer"}]), "user message"),
    ({k: v for k, v in GOOD.items() if k != "messages"}, "messages"),
])
def test_bad_chat_requests_are_400(http: httpx.Client, body: dict[str, Any], mentions: str) -> None:
    error = assert_error(http.post("/v1/chat/completions", json=body), 400, mentions=mentions)
    assert error["type"] == "invalid_request_error"


def test_malformed_json_is_400(http: httpx.Client) -> None:
    response = http.post("/v1/chat/completions", content=b'{"messages": [', headers={"content-type": "application/json"})
    assert "malformed JSON" in assert_error(response, 400)["message"]


def test_prompt_longer_than_the_context_is_400(http: httpx.Client, tiny_chat_model: Any) -> None:
    long_text = "hello " * (tiny_chat_model.context_length + 10)
    chat = http.post("/v1/chat/completions", json=with_(messages=[{"role": "user", "content": long_text}]))
    assert_error(chat, 400)
    completion = http.post("/v1/completions", json={"prompt": long_text, "max_tokens": 3})
    assert "context" in assert_error(completion, 400)["message"]
    streamed = http.post("/v1/completions", json={"prompt": long_text, "max_tokens": 3, "stream": True})
    assert_error(streamed, 400)  # refused before the stream starts, with a status the client sees


def test_max_tokens_past_the_context_is_400(http: httpx.Client, tiny_chat_model: Any) -> None:
    body = with_(max_tokens=tiny_chat_model.context_length + 1)
    assert_error(http.post("/v1/chat/completions", json=body), 400, mentions="max_new_tokens")


def test_bad_completion_requests_are_400(http: httpx.Client) -> None:
    assert_error(http.post("/v1/completions", json={"prompt": 5}), 400, mentions="prompt")
    assert_error(http.post("/v1/completions", json={"prompt": []}), 400)
    assert_error(http.post("/v1/completions", json={"prompt": ""}), 400)
    assert_error(http.post("/v1/completions", json={"prompt": "x", "logprobs": 9}), 400, mentions="logprobs")


def test_unknown_fields_are_refused_by_name_and_harmless_ones_pass(http: httpx.Client) -> None:
    assert_error(http.post("/v1/chat/completions", json=with_(frobnicate=True)), 400, mentions="frobnicate")
    body = with_(tools=[], response_format={"type": "text"}, user="alice", store=False, metadata={"a": "b"})
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["finish_reason"] in ("stop", "length")


def test_unknown_route_and_method_are_openai_style(http: httpx.Client) -> None:
    assert_error(http.get("/v1/nothing"), 404)
    assert_error(http.get("/v1/chat/completions"), 405)


def test_server_still_serves_after_bad_input(http: httpx.Client, client: Any) -> None:
    for _ in range(3):
        http.post("/v1/chat/completions", content=b"{nope")
        http.post("/v1/chat/completions", json=with_(max_tokens=0))
    answer = client.chat.completions.create(**GOOD)
    assert answer.choices[0].finish_reason in ("stop", "length")
    assert http.get("/health").status_code == 200
