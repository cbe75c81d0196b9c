"""Ollama's API (/api/*) through the official `ollama` client against a real server with the tiny model."""

from __future__ import annotations

import json
from typing import Any

import httpx
import ollama
import pytest

from tests.support.live_server import LiveServer, aborted_requests, leave_stream_midway, wait_until_idle

MESSAGES = [{"role": "system", "content": "Be terse."}, {"role": "user", "content": "Tell me a story 🤖"}]
SAMPLED = {"temperature": 0.9, "seed": 99, "num_predict": 16}


@pytest.fixture(scope="module")
def client(server: LiveServer) -> ollama.Client:
    return ollama.Client(host=server.url, timeout=60)


def test_chat_streamed_equals_whole_and_reports_counts_and_timings(client: ollama.Client, tiny_chat_model: Any) -> None:
    whole = client.chat(model="tiny-qwen", messages=MESSAGES, options=SAMPLED, stream=False)
    parts = list(client.chat(model="tiny-qwen", messages=MESSAGES, options=SAMPLED, stream=True))
    assert "".join(p.message.content for p in parts) == whole.message.content and whole.message.content
    assert all(not p.done for p in parts[:-1]) and parts[-1].done and parts[-1].message.content == ""
    prompt = len(tiny_chat_model.inputs.prompter.build(MESSAGES, max_prompt_tokens=tiny_chat_model.context_length).ids)
    for final in (whole, parts[-1]):
        assert final.model == "tiny-qwen" and final.message.role == "assistant"
        assert final.done_reason == "length" and final.eval_count == 16 and final.prompt_eval_count == prompt
        assert final.load_duration == 0 and final.prompt_eval_duration > 0 and final.eval_duration > 0
        assert final.total_duration >= final.prompt_eval_duration + final.eval_duration - 1
        assert final.created_at.endswith("Z")


def test_generate_uses_the_chat_template_and_raw_skips_it(client: ollama.Client, tiny_chat_model: Any) -> None:
    options = {"temperature": 0, "num_predict": 8}
    generated = client.generate(model="m", prompt="Tell me a story 🤖", system="Be terse.", options=options)
    chatted = client.chat(model="m", messages=MESSAGES, options=options)
    assert generated.response == chatted.message.content and generated.done_reason == "length"
    streamed = "".join(p.response for p in client.generate(model="m", prompt="Tell me a story 🤖", system="Be terse.",
                                                            options=options, stream=True))
    assert streamed == generated.response
    raw = client.generate(model="m", prompt="Once upon a time", raw=True, options=options)
    assert raw.prompt_eval_count == 4  # "Once", " upon", " a", " time": no template around it
    assert raw.response == tiny_chat_model.complete_stream("Once upon a time", temperature=0,
                                                           max_new_tokens=8).collect().text


def test_stop_options_end_the_answer(client: ollama.Client) -> None:
    greedy = client.chat(model="m", messages=MESSAGES, options={"temperature": 0, "num_predict": 30}).message.content
    stop = greedy[8:11]
    stopped = client.chat(model="m", messages=MESSAGES, options={"temperature": 0, "num_predict": 30, "stop": [stop]})
    assert stopped.message.content == greedy[: greedy.index(stop)] and stopped.done_reason == "stop"


def test_list_show_ps_and_version(client: ollama.Client, http: httpx.Client, tiny_chat_model: Any) -> None:
    [listed] = client.list().models
    assert listed.model == "tiny-qwen" and listed.digest
    shown = client.show("tiny-qwen")
    assert shown.template == tiny_chat_model.tokenizer.chat_template and "completion" in shown.capabilities
    assert shown.modelinfo["context_length"] == tiny_chat_model.context_length
    [running] = client.ps().models
    assert running.model == "tiny-qwen" and running.context_length == tiny_chat_model.context_length
    assert http.get("/api/version").json()["version"]


def test_stream_defaults_to_true_as_in_ollama(http: httpx.Client) -> None:
    response = http.post("/api/chat", json={"model": "m", "messages": MESSAGES, "options": {"num_predict": 5}})
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert len(lines) > 1 and lines[-1]["done"] is True and not any(line["done"] for line in lines[:-1])


def test_an_empty_request_loads_the_model_as_in_ollama(client: ollama.Client) -> None:
    assert client.chat(model="m", messages=[]).done_reason == "load"
    assert client.generate(model="m", prompt="").done_reason == "load"


def test_model_management_routes_say_this_server_serves_one_model(client: ollama.Client) -> None:
    for call in (lambda: client.pull("qwen3:8b"), lambda: client.delete("tiny-qwen"),
                 lambda: client.create(model="x", from_="tiny-qwen"), lambda: client.copy("tiny-qwen", "y"),
                 lambda: client.push("tiny-qwen")):
        with pytest.raises(ollama.ResponseError) as refused:
            call()
        assert refused.value.status_code == 400 and "serves one model" in refused.value.error
    assert len(client.embed(model="m", input="hi").embeddings) == 1  # embeddings are served (docs/embeddings.md)


@pytest.mark.parametrize(("path", "body", "mentions"), [
    ("/api/chat", {"messages": MESSAGES}, "model"),
    ("/api/chat", {"model": "m", "messages": "hi"}, "messages"),
    ("/api/chat", {"model": "m", "messages": [{"role": "robot", "content": "hi"}]}, "role"),
    ("/api/chat", {"model": "m", "messages": MESSAGES, "options": {"temperature": "hot"}}, "temperature"),
    ("/api/chat", {"model": "m", "messages": MESSAGES, "options": {"temperature": -1.0}}, "temperature"),
    ("/api/chat", {"model": "m", "messages": [{"role": "user", "content": "hi", "images": ["aGk="]}]}, "image"),
    ("/api/chat", {"model": "m", "messages": [{"role": "assistant", "content": "Me first"}]}, "nothing to answer"),
    ("/api/generate", {"model": "m", "prompt": "hi", "suffix": "end"}, "suffix"),
    ("/api/generate", {"model": "m", "prompt": "hi", "context": [1, 2]}, "context"),
    ("/api/generate", {"model": "m", "prompt": 5}, "prompt"),
])
def test_malformed_bodies_get_ollama_400s(http: httpx.Client, path: str, body: dict[str, Any], mentions: str) -> None:
    response = http.post(path, json=body)
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"error"} and mentions in response.json()["error"]


def test_malformed_json_is_an_ollama_400(http: httpx.Client) -> None:
    response = http.post("/api/chat", content=b'{"messages": [', headers={"content-type": "application/json"})
    assert response.status_code == 400 and "malformed JSON" in response.json()["error"]


def test_a_disconnect_mid_stream_leaves_no_running_request(server: LiveServer, http: httpx.Client, tiny_chat_model: Any) -> None:
    before = aborted_requests(http.get("/metrics").text, "/api/chat")
    body = {"model": "m", "messages": MESSAGES, "options": {"num_predict": 400, "temperature": 0.9}}

    assert leave_stream_midway(server.url, "/api/chat", body, lambda line: True) == 3
    assert wait_until_idle(tiny_chat_model, timeout=5), tiny_chat_model.engine.stats()
    assert aborted_requests(http.get("/metrics").text, "/api/chat") - before == 1


SCHEMA = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"],
          "additionalProperties": False}


def test_format_schema_and_json_constrain_the_output(client: ollama.Client, http: httpx.Client) -> None:
    import jsonschema

    options = {"temperature": 0.9, "seed": 5, "num_predict": 40}
    whole = client.chat(model="m", messages=MESSAGES, format=SCHEMA, options=options)
    streamed = "".join(p.message.content for p in client.chat(model="m", messages=MESSAGES, format=SCHEMA,
                                                              options=options, stream=True))
    assert whole.message.content == streamed and whole.done_reason == "stop"
    jsonschema.validate(json.loads(streamed), SCHEMA)
    generated = client.generate(model="m", prompt="JSON please", format="json", options={"num_predict": 4})
    assert generated.response.startswith("{")
    refused = http.post("/api/chat", json={"model": "m", "messages": MESSAGES, "format": "yaml"})
    assert refused.status_code == 400 and "format" in refused.json()["error"]
