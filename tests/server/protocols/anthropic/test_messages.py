"""Anthropic Messages (/v1/messages) through the official `anthropic` client against a real server with the tiny
model. Newer Anthropic clients take sampling fields only through ``extra_body``."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import pytest

from tests.support.live_server import LiveServer, aborted_requests, leave_stream_midway, wait_until_idle

MESSAGES = [{"role": "user", "content": "Tell me a story 🤖"}]


@pytest.fixture(scope="module")
def claude(server: LiveServer) -> Iterator[anthropic.Anthropic]:
    with anthropic.Anthropic(base_url=server.url, api_key="unused", max_retries=0, timeout=60) as client:
        yield client


def sampled(seed: int, temperature: float = 0.9) -> dict[str, Any]:
    return {"extra_body": {"seed": seed, "temperature": temperature}}


def test_create_reports_text_stop_reason_and_usage(claude: anthropic.Anthropic, tiny_chat_model: Any) -> None:
    message = claude.messages.create(model="tiny-qwen", max_tokens=10, system="Be terse.", messages=MESSAGES,
                                     **sampled(0, 0.0))
    assert message.id.startswith("msg_") and message.type == "message" and message.role == "assistant"
    assert message.model == "tiny-qwen" and message.stop_reason == "max_tokens" and message.stop_sequence is None
    [block] = message.content
    assert block.type == "text" and block.text
    counted = claude.messages.count_tokens(model="tiny-qwen", system="Be terse.", messages=MESSAGES).input_tokens
    prompt = tiny_chat_model.inputs.prompter.build([{"role": "system", "content": "Be terse."}, *MESSAGES],
                                            max_prompt_tokens=tiny_chat_model.context_length)
    assert counted == len(prompt.ids)
    # Anthropic counts cache reads apart from input_tokens; together they are the whole prompt.
    assert message.usage.input_tokens + message.usage.cache_read_input_tokens == counted
    assert message.usage.output_tokens == 10


def test_streamed_text_equals_the_whole_message_for_the_same_seed(claude: anthropic.Anthropic) -> None:
    args: dict[str, Any] = {"model": "m", "max_tokens": 20, "messages": MESSAGES, **sampled(77)}
    whole = claude.messages.create(**args)
    with claude.messages.stream(**args) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == whole.content[0].text == final.content[0].text and text
    assert final.stop_reason == whole.stop_reason == "max_tokens"
    assert final.usage.output_tokens == whole.usage.output_tokens == 20

    raw = [event.type for event in claude.messages.create(stream=True, **args)]  # the client drops pings
    assert raw[:2] == ["message_start", "content_block_start"]
    assert raw[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(raw[2:-3]) == {"content_block_delta"}


def test_a_stop_sequence_is_named(claude: anthropic.Anthropic) -> None:
    greedy = claude.messages.create(model="m", max_tokens=30, messages=MESSAGES, **sampled(0, 0.0)).content[0].text
    stop = greedy[10:13]
    message = claude.messages.create(model="m", max_tokens=30, messages=MESSAGES, stop_sequences=["\u2603", stop],
                                     **sampled(0, 0.0))
    assert message.stop_reason == "stop_sequence" and message.stop_sequence == stop
    assert message.content[0].text == greedy[: greedy.index(stop)]
    with claude.messages.stream(model="m", max_tokens=30, messages=MESSAGES, stop_sequences=[stop],
                                **sampled(0, 0.0)) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", stop)


def test_x_api_key_and_bearer_both_work_and_errors_have_anthropics_shape(tiny_chat_model: Any) -> None:
    from qwen_stream.server.app import create_app

    body = {"model": "m", "max_tokens": 2, "messages": MESSAGES}
    with LiveServer(create_app(tiny_chat_model, api_key="s3cret", model_aliases=["m"])) as live:
        with anthropic.Anthropic(base_url=live.url, api_key="s3cret", max_retries=0) as client:
            assert client.messages.create(**body).content
        with anthropic.Anthropic(base_url=live.url, api_key="wrong", max_retries=0) as client, \
                pytest.raises(anthropic.AuthenticationError):
            client.messages.create(**body)
        bearer = httpx.post(f"{live.url}/v1/messages", json=body, headers={"Authorization": "Bearer s3cret"})
        assert bearer.status_code == 200
        missing = httpx.post(f"{live.url}/v1/messages", json=body)
        assert missing.status_code == 401
        assert missing.json()["type"] == "error" and missing.json()["error"]["type"] == "authentication_error"
        # The same key opens the OpenAI routes with x-api-key too.
        assert httpx.get(f"{live.url}/v1/models", headers={"x-api-key": "s3cret"}).status_code == 200


GOOD = {"model": "m", "max_tokens": 3, "messages": MESSAGES}


@pytest.mark.parametrize(("body", "mentions"), [
    ({k: v for k, v in GOOD.items() if k != "max_tokens"}, "max_tokens"),
    ({**GOOD, "max_tokens": 0}, "max_tokens"),
    ({**GOOD, "messages": []}, "messages"),
    ({**GOOD, "messages": [{"role": "robot", "content": "hi"}]}, "role"),
    ({**GOOD, "messages": [{"role": "user", "content": [{"type": "image", "source": {}}]}]}, "image"),
    ({**GOOD, "messages": [{"role": "assistant", "content": "Prefilled"}]}, "nothing to answer"),
    ({**GOOD, "temperature": -1.0}, "temperature"),
    ({**GOOD, "extra": 1}, "extra: unknown field"),
    ({**GOOD, "stop_sequences": [""]}, "stop"),
    ({**GOOD, "system": [{"type": "image"}]}, "system"),
])
def test_malformed_bodies_get_anthropic_400s(http: httpx.Client, body: dict[str, Any], mentions: str) -> None:
    response = http.post("/v1/messages", json=body)
    assert response.status_code == 400, response.text
    payload = response.json()
    assert payload["type"] == "error" and payload["error"]["type"] == "invalid_request_error"
    assert mentions in payload["error"]["message"], payload


def test_malformed_json_and_bad_count_tokens_are_anthropic_400s(http: httpx.Client) -> None:
    broken = http.post("/v1/messages", content=b'{"messages": [', headers={"content-type": "application/json"})
    assert broken.status_code == 400 and "malformed JSON" in broken.json()["error"]["message"]
    count = http.post("/v1/messages/count_tokens", json={"model": "m", "messages": "hi"})
    assert count.status_code == 400 and count.json()["error"]["type"] == "invalid_request_error"


def test_a_disconnect_mid_stream_leaves_no_running_request(server: LiveServer, http: httpx.Client, tiny_chat_model: Any) -> None:
    before = aborted_requests(http.get("/metrics").text, "/v1/messages")
    body = {**GOOD, "max_tokens": 400, "stream": True, "temperature": 0.9}

    assert leave_stream_midway(server.url, "/v1/messages", body, lambda line: line == "event: content_block_delta") == 3
    assert wait_until_idle(tiny_chat_model, timeout=5), tiny_chat_model.engine.stats()
    assert aborted_requests(http.get("/metrics").text, "/v1/messages") - before == 1


SCHEMA = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]}}, "required": ["answer"],
          "additionalProperties": False}


def test_output_config_format_gives_json_that_validates(claude: anthropic.Anthropic) -> None:
    import json

    import jsonschema

    args: dict[str, Any] = {"model": "m", "max_tokens": 40, "messages": MESSAGES, **sampled(11),
                            "output_config": {"format": {"type": "json_schema", "schema": SCHEMA}}}
    whole = claude.messages.create(**args)
    with claude.messages.stream(**args) as stream:
        streamed = "".join(stream.text_stream)
    assert whole.stop_reason == "end_turn" and whole.content[0].text == streamed
    jsonschema.validate(json.loads(streamed), SCHEMA)


def test_a_bad_output_format_is_an_anthropic_400(http: httpx.Client) -> None:
    for output_format in ({"type": "json_schema", "schema": {"type": "nonsense"}}, {"type": "yaml"}):
        response = http.post("/v1/messages", json={**GOOD, "output_config": {"format": output_format}})
        assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
