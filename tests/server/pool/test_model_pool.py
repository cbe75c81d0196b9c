"""Several models in one server: loaded on first use, unloaded past --max-loaded-models (least recently used) or
after keep_alive, never under a running request; an unknown name is a 404 on every protocol. Two scripted models
(tests/support/scripted_backend.py: the real Qwen tokenizer over a scripted engine, loaded at once, pacing their
tokens so a stream can be caught running) stand for two models: these tests are about the pool, not what the models
compute. The clients are the official openai, anthropic and ollama packages on a real socket."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from qwen_stream.server.app import create_app
from qwen_stream.server.pool.keep_alive import keep_alive_seconds, parse_duration
from qwen_stream.server.pool.model_pool import PoolEntry
from qwen_stream.server.pool.specs import parse_model_specs
from qwen_stream.server.wire.errors import APIError
from tests.support.live_server import LiveServer
from tests.support.scripted_backend import scripted_model

MESSAGES = [{"role": "user", "content": "Say something."}]
LONG = {"max_tokens": 80, "temperature": 0, "extra_body": {"ignore_eos": True}}


def _scripted(tokenizer: Any, name: str, loads: list[str], reload_s: float = 0.0) -> PoolEntry:
    def load() -> Any:
        if name in loads:
            time.sleep(reload_s)
        loads.append(name)
        return scripted_model(tokenizer, name=f"model-{name}", max_running=2, max_model_len=256, step_s=0.01)

    return PoolEntry(load, name, aliases=frozenset({f"{name}-alias"}))


def _serve(tokenizer: Any, loads: list[str], reload_a_s: float = 0.0, **options: Any) -> LiveServer:
    entries = [_scripted(tokenizer, "a", loads, reload_a_s), _scripted(tokenizer, "b", loads)]
    return LiveServer(create_app(entries, load_wait_s=60, **options))


def _running(http: httpx.Client) -> list[str]:
    return [m["name"] for m in http.get("/api/ps").json()["models"]]


def _wait_for(check: Any, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture()
def lru(qwen_tokenizer: Any) -> Iterator[tuple[LiveServer, list[str]]]:
    loads: list[str] = []
    with _serve(qwen_tokenizer, loads, max_loaded_models=1) as live:
        yield live, loads


def test_keep_alive_accepts_ollama_durations_and_refuses_the_rest() -> None:
    assert [parse_duration(d) for d in ("5m", "1h30m", "90s", "500ms", "0", "300", "-1m")] == \
        [300.0, 5400.0, 90.0, 0.5, 0.0, 300.0, math.inf]
    assert keep_alive_seconds(None) is None and keep_alive_seconds(-1) == math.inf and keep_alive_seconds(0) == 0
    for bad in ("5 minutes", "m", "", "1d"):
        with pytest.raises(APIError) as refused:
            keep_alive_seconds(bad)
        assert refused.value.status == 400 and "keep_alive" in refused.value.detail.message


def test_model_names_come_from_name_equals_path_aliases_and_file_stems(tmp_path: Path) -> None:
    for file in ("coder.gguf", "big-00001-of-00002.gguf", "big-00002-of-00002.gguf", "notes.txt"):
        (tmp_path / file).write_bytes(b"")
    specs = parse_model_specs(["smollm2-135m", "mine=/x/y.gguf", "/x/z.gguf"], str(tmp_path))
    assert [(s.name, s.source) for s in specs] == [
        ("smollm2-135m", "smollm2-135m"), ("mine", "/x/y.gguf"), ("z", "/x/z.gguf"),
        ("big", str(tmp_path / "big-00001-of-00002.gguf")), ("coder", str(tmp_path / "coder.gguf"))]
    with pytest.raises(ValueError, match="two models are named 'z'"):
        parse_model_specs(["/x/z.gguf", "/y/z.gguf"])


def test_the_least_recently_used_model_unloads_after_its_stream_ends(lru: tuple[LiveServer, list[str]]) -> None:
    live, loads = lru
    client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="x", max_retries=0, timeout=120)
    with httpx.Client(base_url=live.url, timeout=60) as http:
        assert [m["id"] for m in http.get("/v1/models").json()["data"]] == ["a", "b"]
        assert client.chat.completions.create(model="a", messages=MESSAGES, max_tokens=3).model == "a"
        assert _running(http) == ["a"]
        stream = client.chat.completions.create(model="a", messages=MESSAGES, stream=True,
                                                stream_options={"include_usage": True}, **LONG)
        first = next(iter(stream))
        answers: list[str] = []  # b needs a's room: it waits for a's stream, then for a's unload and its own load
        other = threading.Thread(target=lambda: answers.append(
            client.chat.completions.create(model="b-alias", messages=MESSAGES, max_tokens=3).model))
        other.start()
        rest = list(stream)
        other.join(120)
        usage = rest[-1].usage
        assert first.model == "a" and rest[-2].choices[0].finish_reason == "length"
        assert usage is not None and usage.completion_tokens == LONG["max_tokens"]  # the stream was not cut
        assert answers == ["b"] and _running(http) == ["b"] and loads == ["a", "b"]
        health = http.get("/health").json()
        assert health == {"status": "ok", "model": "a", "models": {"a": "not loaded", "b": "loaded"}}
        assert client.chat.completions.create(model="a", messages=MESSAGES, max_tokens=2).model == "a"
        assert loads == ["a", "b", "a"] and _running(http) == ["a"]


def test_keep_alive_zero_unloads_one_model_while_the_other_streams(qwen_tokenizer: Any) -> None:
    loads: list[str] = []
    # a reloads at once: the reaper must not unload a model loaded for a waiting request whose last keep_alive (0)
    # ran out (it did, again after each reload, until the request's wait ran out: a 503 after 300 s on real models)
    with _serve(qwen_tokenizer, loads) as live, httpx.Client(base_url=live.url, timeout=60) as http:
        client = ollama.Client(host=live.url, timeout=120)
        assert client.chat(model="a", messages=MESSAGES, options={"num_predict": 2}).done
        assert client.chat(model="b", messages=MESSAGES, options={"num_predict": 2}).done
        ps = client.ps().models
        assert [m.model for m in ps] == ["a", "b"] and all(m.size_vram == 0 and m.expires_at for m in ps)
        stream = client.chat(model="b", messages=MESSAGES, stream=True, options={"num_predict": 60, "temperature": 0})
        first = next(iter(stream))
        assert client.chat(model="a", messages=MESSAGES, keep_alive=0, options={"num_predict": 2}).done
        _wait_for(lambda: _running(http) == ["b"])
        rest = list(stream)
        assert first.model == "b" and rest[-1].done and rest[-1].done_reason == "length"
        assert rest[-1].eval_count == 60
        assert client.generate(model="b", keep_alive=0).done_reason == "unload"  # Ollama's unload call
        _wait_for(lambda: _running(http) == [])
        assert client.generate(model="a", keep_alive="10m").done_reason == "load"  # and its load call
        [running] = client.ps().models
        left = running.expires_at.timestamp() - time.time() if running.expires_at else 0
        assert running.model == "a" and 500 < left <= 600 and loads == ["a", "b", "a"]


def test_an_unknown_model_is_a_404_in_each_protocols_shape(lru: tuple[LiveServer, list[str]]) -> None:
    live, _ = lru
    oa = openai.OpenAI(base_url=f"{live.url}/v1", api_key="x", max_retries=0, timeout=60)
    with pytest.raises(openai.NotFoundError) as chat:
        oa.chat.completions.create(model="nope", messages=MESSAGES)
    assert chat.value.body["code"] == "model_not_found" and "`a`, `b`" in chat.value.body["message"]
    with pytest.raises(openai.NotFoundError):
        oa.responses.create(model="nope", input="hi")
    with pytest.raises(openai.NotFoundError):
        oa.completions.create(model="nope", prompt="hi")
    with pytest.raises(openai.NotFoundError):
        oa.models.retrieve("nope")
    claude = anthropic.Anthropic(base_url=live.url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as message:
        claude.messages.create(model="nope", max_tokens=5, messages=MESSAGES)  # type: ignore[arg-type]
    assert message.value.body["type"] == "error" and "nope" in message.value.body["error"]["message"]
    with pytest.raises(ollama.ResponseError) as generated:
        ollama.Client(host=live.url).chat(model="nope", messages=MESSAGES)
    assert generated.value.status_code == 404 and "nope" in generated.value.error
    with httpx.Client(base_url=live.url, timeout=60) as http:
        assert http.post("/tokenize", json={"model": "nope", "prompt": "hi"}).status_code == 404
        assert http.post("/tokenize", json={"model": "b", "prompt": "hi"}).json()["count"] >= 1
        shown = http.post("/api/show", json={"model": "nope"})
        assert shown.status_code == 404 and list(shown.json()) == ["error"]  # Ollama's shape


def test_requests_wait_for_a_load_up_to_the_bound_then_get_503(qwen_tokenizer: Any) -> None:
    release = threading.Event()
    loads: list[str] = []
    slow = _scripted(qwen_tokenizer, "slow", loads)
    waiting = PoolEntry(lambda: (release.wait(30), slow.loader())[1], "waiting")
    app = create_app([_scripted(qwen_tokenizer, "a", loads), waiting], load_wait_s=0.5)
    with LiveServer(app) as live, httpx.Client(base_url=live.url, timeout=60) as http:
        _wait_for(lambda: http.get("/health").status_code == 200)
        refused = http.post("/v1/chat/completions", json={"model": "waiting", "messages": MESSAGES})
        assert refused.status_code == 503 and refused.headers["retry-after"]
        assert "still loading" in refused.json()["error"]["message"]
        served = http.post("/v1/chat/completions", json={"model": "a", "messages": MESSAGES, "max_tokens": 2})
        assert served.status_code == 200  # a load in progress blocks nobody else
        assert http.get("/health").json()["models"] == {"a": "loaded", "waiting": "loading"}
        release.set()
        _wait_for(lambda: http.post("/v1/chat/completions", json={
            "model": "waiting", "messages": MESSAGES, "max_tokens": 2}).status_code == 200)


