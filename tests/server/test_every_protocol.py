"""What every protocol shares with /v1/chat/completions: the queue limit (429, in each protocol's error shape),
the API key, and metrics labelled by route."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from qwen_stream.server.app import create_app
from tests.support.live_server import LiveServer, burst_while_held, wait_until_idle
from tests.support.scripted_backend import scripted_model

LONG = {
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "Talk."}], "max_tokens": 120},
    "/v1/responses": {"input": "Talk.", "max_output_tokens": 120},
    "/v1/messages": {"model": "m", "max_tokens": 120, "messages": [{"role": "user", "content": "Talk."}]},
    "/api/chat": {"model": "m", "stream": False, "messages": [{"role": "user", "content": "Talk."}],
                  "options": {"num_predict": 120}},
}

SHORT = {
    "/v1/chat/completions": {"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 2},
    "/v1/responses": {"input": "Hi", "max_output_tokens": 2},
    "/v1/messages": {"model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "Hi"}]},
    "/api/chat": {"model": "m", "stream": False, "messages": [{"role": "user", "content": "Hi"}],
                  "options": {"num_predict": 2}},
}
KEY = {"Authorization": "Bearer k3y"}


def rate_limit_error(route: str, body: dict[str, Any]) -> str:
    """The error type a client of ``route`` reads from a 429 body."""
    if route == "/v1/messages":
        assert body["type"] == "error"
        return str(body["error"]["type"])
    if route.startswith("/api/"):
        assert isinstance(body["error"], str)
        return "ollama"
    return str(body["error"]["type"])


@pytest.fixture(scope="module")
def small_server(qwen_tokenizer: Any) -> Any:
    """A scripted model (tests/support/scripted_backend.py) with one slot and one waiting place, and the gate that
    holds its steps: the refusal's shape in each protocol is the point, not the model."""
    gate = threading.Event()
    gate.set()
    model = scripted_model(qwen_tokenizer, max_running=1, max_waiting=1, max_model_len=512, gate=gate)
    try:
        with LiveServer(create_app(model, api_key="k3y", model_aliases=["m"])) as live:
            yield live, model, gate
    finally:
        model.close()


@pytest.mark.parametrize("route", list(LONG))
def test_a_full_queue_is_429_with_retry_after_in_each_protocols_shape(small_server: Any, route: str) -> None:
    live, model, gate = small_server
    with httpx.Client(base_url=live.url, timeout=60, headers=KEY) as http:
        responses = burst_while_held(lambda: http.post(route, json=LONG[route]), 5, gate, admitted=2)
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200, 200, 429, 429, 429], statuses  # one running, one waiting, the rest refused
    refused = next(r for r in responses if r.status_code == 429)
    assert int(refused.headers["retry-after"]) >= 1
    assert rate_limit_error(route, refused.json()) in ("rate_limit_error", "ollama")
    assert wait_until_idle(model)


@pytest.mark.parametrize(("method", "route"), [("POST", "/v1/responses"), ("POST", "/v1/messages"),
                                               ("POST", "/api/chat"), ("GET", "/api/tags"), ("GET", "/api/version")])
def test_every_route_needs_the_api_key(small_server: Any, method: str, route: str) -> None:
    live, _, _ = small_server
    body = SHORT.get(route)
    assert httpx.request(method, f"{live.url}{route}", json=body).status_code == 401
    for header in (KEY, {"x-api-key": "k3y"}):
        assert httpx.request(method, f"{live.url}{route}", json=body, headers=header).status_code == 200


def test_metrics_are_labelled_by_route(small_server: Any) -> None:
    live, model, _ = small_server
    for route, body in SHORT.items():
        assert httpx.post(f"{live.url}{route}", json=body, headers=KEY).status_code == 200
    assert wait_until_idle(model)
    metrics = httpx.get(f"{live.url}/metrics").text
    for route in LONG:
        assert f'qwen_stream_generation_tokens_total{{model="{model.name}",route="{route}"}}' in metrics, route
