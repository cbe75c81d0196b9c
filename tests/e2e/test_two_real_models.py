"""Two real small models in one server (smollm2-135m and qwen2.5-coder-0.5b), through the official openai, ollama
and anthropic clients: requests to both interleaved, one unloaded (keep_alive 0) while the other streams, /api/ps
before and after, and a 404 for a name not served on every protocol."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from qwen_stream.server.app import create_app
from qwen_stream.server.pool.model_pool import PoolEntry
from tests.support.live_server import LiveServer

pytestmark = pytest.mark.slow

SMALL, CODER = "smollm2-135m", "qwen2.5-coder-0.5b"
QUESTION = [{"role": "user", "content": "What is the capital of France? Answer in English."}]
GREEDY = {"temperature": 0, "num_predict": 24}


def _entry(alias: str) -> PoolEntry:
    def load() -> Any:
        from qwen_stream.api import ChatModel

        return ChatModel.load(alias, max_batch_size=2, context_length=2048, progress=False)

    return PoolEntry(load, alias)


@pytest.fixture(scope="module")
def live() -> Iterator[LiveServer]:
    with LiveServer(create_app([_entry(SMALL), _entry(CODER)], load_wait_s=300)) as server:
        yield server


def _running(http: httpx.Client) -> list[str]:
    return sorted(m["name"] for m in http.get("/api/ps").json()["models"])


def test_requests_to_both_models_interleave(live: LiveServer) -> None:
    oa = openai.OpenAI(base_url=f"{live.url}/v1", api_key="x", max_retries=0, timeout=300)
    ol = ollama.Client(host=live.url, timeout=300)
    answers: dict[str, str] = {}

    def ask(key: str, model: str, via: str) -> None:
        if via == "openai":
            reply = oa.chat.completions.create(model=model, messages=QUESTION, max_tokens=24, temperature=0)  # type: ignore[arg-type]
            answers[key] = f"{reply.model}: {reply.choices[0].message.content}"
        else:
            chatted = ol.chat(model=model, messages=QUESTION, options=GREEDY)
            answers[key] = f"{chatted.model}: {chatted.message.content}"

    asks = [("1", SMALL, "openai"), ("2", CODER, "ollama"), ("3", CODER, "openai"), ("4", SMALL, "ollama")]
    threads = [threading.Thread(target=ask, args=a) for a in asks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert sorted(answers) == ["1", "2", "3", "4"], answers
    for key, model, _ in asks:
        assert answers[key].startswith(f"{model}: ") and "Paris" in answers[key], answers
    # Greedy: each model gives the same text whichever protocol asked.
    assert answers["1"].split(": ", 1)[1] == answers["4"].split(": ", 1)[1]
    with httpx.Client(base_url=live.url) as http:
        assert _running(http) == [CODER, SMALL]
        assert {m["id"] for m in http.get("/v1/models").json()["data"]} == {SMALL, CODER}


def test_one_model_unloads_while_the_other_streams(live: LiveServer) -> None:
    oa = openai.OpenAI(base_url=f"{live.url}/v1", api_key="x", max_retries=0, timeout=300)
    ol = ollama.Client(host=live.url, timeout=300)
    with httpx.Client(base_url=live.url, timeout=60) as http:
        assert ol.chat(model=SMALL, messages=QUESTION, options=GREEDY).done  # both loaded
        assert ol.chat(model=CODER, messages=QUESTION, options=GREEDY).done
        assert _running(http) == [CODER, SMALL]
        stream = iter(oa.chat.completions.create(
            model=CODER, messages=[{"role": "user", "content": "Write a long story about a lighthouse."}],  # type: ignore[list-item]
            max_tokens=160, temperature=0, stream=True, stream_options={"include_usage": True},
            extra_body={"ignore_eos": True}))
        text = [next(stream).choices[0].delta.content or ""]
        assert ol.chat(model=SMALL, messages=QUESTION, options=GREEDY, keep_alive=0).done
        after_unload = 0
        unloaded = False
        for chunk in stream:
            text += [c.delta.content or "" for c in chunk.choices]
            after_unload += unloaded
            unloaded = unloaded or _running(http) == [CODER]
            last = chunk
        assert unloaded and after_unload > 0  # the other model went while this stream still ran
        assert last.usage is not None and last.usage.completion_tokens == 160 and len("".join(text)) > 200
        assert _running(http) == [CODER]
        assert http.get("/health").json()["models"] == {SMALL: "not loaded", CODER: "loaded"}
        reloaded = ol.chat(model=SMALL, messages=QUESTION, options=GREEDY)  # loads again on demand
        assert "Paris" in reloaded.message.content and _running(http) == [CODER, SMALL]


def test_an_unknown_model_is_a_404_on_all_four_protocols(live: LiveServer) -> None:
    oa = openai.OpenAI(base_url=f"{live.url}/v1", api_key="x", max_retries=0, timeout=60)
    with pytest.raises(openai.NotFoundError):
        oa.chat.completions.create(model="llama3", messages=QUESTION)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError) as responses:
        oa.responses.create(model="llama3", input="hi")
    assert responses.value.body["code"] == "model_not_found"
    with pytest.raises(anthropic.NotFoundError) as messages:
        anthropic.Anthropic(base_url=live.url, api_key="x", max_retries=0).messages.create(
            model="llama3", max_tokens=5, messages=QUESTION)  # type: ignore[arg-type]
    assert messages.value.body["error"]["type"] == "not_found_error" and "llama3" in messages.value.body["error"]["message"]
    with pytest.raises(ollama.ResponseError) as chatted:
        ollama.Client(host=live.url).chat(model="llama3", messages=QUESTION)
    assert chatted.value.status_code == 404 and SMALL in chatted.value.error and CODER in chatted.value.error
