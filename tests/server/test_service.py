"""Auth, CORS, health while loading, refusals when the engine's queue is full, and a draining server. The tests of
loading, stopping and queues stand on scripted models (tests/support/scripted_backend.py: the real tokenizer over a
scripted engine that loads at once and keeps the engines' admission rules): what the server says is the point."""

from __future__ import annotations

import threading
import time
from typing import Any

import httpx
import pytest

from qwen_stream.server.app import create_app
from tests.support.live_server import LiveServer, burst_while_held, wait_until_idle
from tests.support.scripted_backend import scripted_model

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "temperature": 0}


def test_api_key_is_required_on_v1_only(tiny_chat_model: Any) -> None:
    import openai

    with LiveServer(create_app(tiny_chat_model, api_key="s3cret", model_aliases=["m"])) as live, \
            httpx.Client(base_url=live.url) as http:
        missing = http.post("/v1/chat/completions", json=CHAT)
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "invalid_api_key"
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = http.get("/v1/models", headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and "incorrect" in wrong.json()["error"]["message"]
        assert http.get("/health").status_code == 200  # probes need no key

        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{live.url}/v1", api_key="nope", max_retries=0).models.list()
        good = openai.OpenAI(base_url=f"{live.url}/v1", api_key="s3cret", max_retries=0)
        assert good.chat.completions.create(**CHAT).choices[0].message.content is not None


def test_cors_only_when_asked(tiny_chat_model: Any) -> None:
    preflight = {"Origin": "http://example.com", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type,authorization"}
    with LiveServer(create_app(tiny_chat_model, cors_origins=["http://example.com"], model_aliases=["m"])) as live:
        response = httpx.options(f"{live.url}/v1/chat/completions", headers=preflight)
        assert response.status_code == 200
        assert response.headers["access-control-allow-origin"] == "http://example.com"
    with LiveServer(create_app(tiny_chat_model, model_aliases=["m"])) as live:
        response = httpx.options(f"{live.url}/v1/chat/completions", headers=preflight)
        assert "access-control-allow-origin" not in response.headers


def test_health_reports_ready_only_after_loading(qwen_tokenizer: Any) -> None:
    release = threading.Event()

    def load() -> Any:
        release.wait(30)
        return scripted_model(qwen_tokenizer, name="later-model", max_running=2, max_model_len=256)

    with LiveServer(create_app(load, served_model_name="later", model_aliases=["m"])) as live, httpx.Client(base_url=live.url) as http:
        loading = http.get("/health")
        assert loading.status_code == 503 and loading.json()["status"] == "loading"
        refused = http.post("/v1/chat/completions", json=CHAT)
        assert refused.status_code == 503 and refused.headers["retry-after"]
        release.set()
        deadline = time.monotonic() + 60
        while http.get("/health").status_code != 200:
            assert time.monotonic() < deadline, "the model never became ready"
            time.sleep(0.05)
        assert http.get("/health").json() == {"status": "ok", "model": "later"}
        assert http.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_health_fails_once_the_engine_stops(qwen_tokenizer: Any) -> None:
    model = scripted_model(qwen_tokenizer, max_running=1, max_model_len=128)
    try:
        with LiveServer(create_app(model)) as live, httpx.Client(base_url=live.url) as http:
            assert http.get("/health").status_code == 200
            model.engine.shutdown()
            stopped = http.get("/health")
            assert stopped.status_code == 503 and stopped.json()["status"] == "failed"
            assert "engine" in stopped.json()["detail"]
    finally:
        model.close()


def test_health_reports_a_failed_load() -> None:
    def load() -> Any:
        raise FileNotFoundError("no such model: /nowhere")

    with LiveServer(create_app(load, model_aliases=["m"])) as live, httpx.Client(base_url=live.url) as http:
        deadline = time.monotonic() + 10
        while http.get("/health").json()["status"] == "loading" and time.monotonic() < deadline:
            time.sleep(0.02)
        health = http.get("/health")
        assert health.status_code == 503 and "/nowhere" in health.json()["detail"]
        error = http.get("/v1/models").json()["error"]
        assert error["code"] == "model_failed" and "/nowhere" in error["message"]


def test_a_full_queue_is_refused_with_429_and_retry_after(qwen_tokenizer: Any) -> None:
    gate = threading.Event()  # holds the engine's steps: one request runs, one waits, the rest are refused
    model = scripted_model(qwen_tokenizer, max_running=1, max_waiting=1, max_model_len=512, gate=gate)
    body = {**CHAT, "max_tokens": 120, "stream": False}
    try:
        with LiveServer(create_app(model, model_aliases=["m"])) as live, httpx.Client(base_url=live.url, timeout=60) as http:
            responses = burst_while_held(lambda: http.post("/v1/chat/completions", json=body), 6, gate, admitted=2)
            statuses = sorted(r.status_code for r in responses)
            assert statuses == [200, 200, 429, 429, 429, 429], statuses
            refused = next(r for r in responses if r.status_code == 429)
            assert int(refused.headers["retry-after"]) >= 1
            assert refused.json()["error"]["code"] == "engine_overloaded"
            assert wait_until_idle(model)
            assert http.post("/v1/chat/completions", json=CHAT).status_code == 200
    finally:
        model.close()


def test_a_draining_server_refuses_new_requests_and_says_so(tiny_chat_model: Any) -> None:
    app = create_app(tiny_chat_model, served_model_name="tiny-qwen")
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=30) as http:
        assert http.get("/health").status_code == 200
        app.state.server.begin_drain(timeout_s=60)
        health = http.get("/health")
        assert health.status_code == 503 and health.json()["status"] == "draining"
        refused = http.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}], "max_tokens": 2})
        assert refused.status_code == 503 and refused.json()["error"]["code"] == "shutting_down"
