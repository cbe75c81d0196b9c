"""OpenAI Responses (/v1/responses) through the official `openai` client against a real server with the tiny model."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest

from tests.support.live_server import LiveServer, aborted_requests, leave_stream_midway, wait_until_idle

EVENT_ORDER = ["response.created", "response.in_progress", "response.output_item.added",
               "response.content_part.added", "response.output_text.delta"]
CLOSING = ["response.output_text.done", "response.content_part.done", "response.output_item.done"]


def prompt_tokens(model: Any, messages: list[dict[str, str]]) -> int:
    return len(model.inputs.prompter.build(messages, max_prompt_tokens=model.context_length).ids)


def test_plain_response(client: openai.OpenAI, tiny_chat_model: Any) -> None:
    response = client.responses.create(model="tiny-qwen", input="Tell me a story 🤖", instructions="Be terse.",
                                       max_output_tokens=12, temperature=0)
    assert response.id.startswith("resp_") and response.object == "response" and response.model == "tiny-qwen"
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    [message] = response.output
    assert message.type == "message" and message.role == "assistant" and message.id.startswith("msg_")
    assert message.content[0].type == "output_text" and response.output_text == message.content[0].text
    expected = prompt_tokens(tiny_chat_model, [{"role": "system", "content": "Be terse."},
                                               {"role": "user", "content": "Tell me a story 🤖"}])
    assert response.usage.input_tokens == expected
    assert response.usage.output_tokens == 12 and response.usage.total_tokens == expected + 12
    assert response.instructions == "Be terse." and response.max_output_tokens == 12


def test_streamed_text_equals_the_whole_response_for_the_same_seed(client: openai.OpenAI) -> None:
    args: dict[str, Any] = {"model": "m", "input": "Tell me a story", "max_output_tokens": 20, "temperature": 0.9,
                            "extra_body": {"seed": 1234}}
    whole = client.responses.create(**args)
    events = list(client.responses.create(stream=True, **args))
    kinds = [e.type for e in events]
    assert kinds[:5] == EVENT_ORDER and kinds[-4:] == [*CLOSING, "response.incomplete"]
    assert set(kinds[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert streamed == whole.output_text and streamed
    final = events[-1].response
    assert final.output_text == streamed and final.usage.output_tokens == whole.usage.output_tokens == 20
    assert len({e.item_id for e in events if hasattr(e, "item_id")}) == 1
    assert events[0].response.id == final.id and events[0].response.status == "in_progress"


def test_the_sdk_stream_helper_accumulates_a_completed_response(client: openai.OpenAI) -> None:
    greedy = client.responses.create(model="m", input="Count", max_output_tokens=30, temperature=0).output_text
    stop = greedy[10:14]
    with client.responses.stream(model="m", input="Count", max_output_tokens=30, temperature=0,
                                 extra_body={"stop": [stop]}) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()  # raises unless the stream ended with response.completed
    assert final.status == "completed" and final.output_text == "".join(deltas) == greedy[: greedy.index(stop)]


def test_previous_response_id_continues_the_conversation(client: openai.OpenAI) -> None:
    first = client.responses.create(model="m", input="Hello", instructions="Be terse.", max_output_tokens=8,
                                    temperature=0)
    follow = client.responses.create(model="m", input="And then?", previous_response_id=first.id,
                                     instructions="Be terse.", max_output_tokens=8, temperature=0)
    spelled_out = client.responses.create(model="m", instructions="Be terse.", max_output_tokens=8, temperature=0,
                                          input=[{"role": "user", "content": "Hello"},
                                                 {"role": "assistant", "content": first.output_text},
                                                 {"role": "user", "content": "And then?"}])
    assert follow.previous_response_id == first.id
    assert follow.output_text == spelled_out.output_text
    assert follow.usage.input_tokens == spelled_out.usage.input_tokens > first.usage.input_tokens
    assert client.responses.retrieve(first.id).output_text == first.output_text


def test_unknown_unstored_and_deleted_ids_are_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as unknown:
        client.responses.create(model="m", input="Hi", previous_response_id="resp_nope", max_output_tokens=2)
    assert unknown.value.body["param"] == "previous_response_id"
    unstored = client.responses.create(model="m", input="Hi", store=False, max_output_tokens=2)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="m", input="Hi", previous_response_id=unstored.id, max_output_tokens=2)
    kept = client.responses.create(model="m", input="Hi", max_output_tokens=2)
    client.responses.delete(kept.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(kept.id)


def test_the_store_keeps_the_most_recent_responses(tiny_chat_model: Any) -> None:
    from qwen_stream.server.app import create_app

    with LiveServer(create_app(tiny_chat_model, response_store_size=2, model_aliases=["m"])) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="x", max_retries=0)
        ids = [client.responses.create(model="m", input=f"Hi {i}", max_output_tokens=2).id for i in range(3)]
        with pytest.raises(openai.NotFoundError):
            client.responses.retrieve(ids[0])
        assert [client.responses.retrieve(i).id for i in ids[1:]] == ids[1:]


@pytest.mark.parametrize(("body", "mentions"), [
    ({}, "input"),
    ({"input": 3}, "input"),
    ({"input": "hi", "max_output_tokens": 0}, "max_output_tokens"),
    ({"input": "hi", "temperature": "hot"}, "temperature"),
    ({"input": "hi", "temperature": -1.0}, "temperature"),
    ({"input": [{"role": "user", "content": [{"type": "input_image", "image_url": "data:"}]}]}, "image"),
    ({"input": [{"type": "function_call_output"}]}, "input[0]"),
    ({"input": [{"role": "assistant", "content": "I answer"}]}, "nothing to answer"),
    ({"input": "hi", "background": True}, "background"),
])
def test_malformed_bodies_get_openai_400s(http: httpx.Client, body: dict[str, Any], mentions: str) -> None:
    response = http.post("/v1/responses", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and mentions in error["message"] + str(error["param"]), error


def test_malformed_json_is_400(http: httpx.Client) -> None:
    response = http.post("/v1/responses", content=b'{"input": [', headers={"content-type": "application/json"})
    assert response.status_code == 400 and "malformed JSON" in response.json()["error"]["message"]


def test_a_disconnect_mid_stream_leaves_no_running_request(server: LiveServer, http: httpx.Client, tiny_chat_model: Any) -> None:
    before = aborted_requests(http.get("/metrics").text, "/v1/responses")
    body = {"input": "Talk for a long time.", "max_output_tokens": 400, "temperature": 0.9, "stream": True}

    assert leave_stream_midway(server.url, "/v1/responses", body, lambda line: line == "event: response.output_text.delta") == 3
    assert wait_until_idle(tiny_chat_model, timeout=5), tiny_chat_model.engine.stats()
    assert aborted_requests(http.get("/metrics").text, "/v1/responses") - before == 1


SCHEMA = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]},
                                           "score": {"type": "integer", "minimum": 0, "maximum": 9}},
          "required": ["answer", "score"], "additionalProperties": False}


def test_text_format_json_schema_is_followed_streamed_and_whole(client: openai.OpenAI) -> None:
    import json

    import jsonschema

    args: dict[str, Any] = {"model": "m", "input": "Is the sky blue?", "max_output_tokens": 60, "temperature": 0.9,
                            "extra_body": {"seed": 7},
                            "text": {"format": {"type": "json_schema", "name": "verdict", "schema": SCHEMA,
                                                "strict": True}}}
    whole = client.responses.create(**args)
    streamed = "".join(e.delta for e in client.responses.create(stream=True, **args)
                       if e.type == "response.output_text.delta")
    assert whole.status == "completed" and whole.output_text == streamed
    jsonschema.validate(json.loads(streamed), SCHEMA)
    assert whole.text.format.type == "json_schema"
    as_object = client.responses.create(model="m", input="JSON please", max_output_tokens=4, temperature=0,
                                        text={"format": {"type": "json_object"}})
    assert as_object.output_text.startswith("{")


def test_a_schema_the_grammar_library_rejects_is_400(http: httpx.Client) -> None:
    response = http.post("/v1/responses", json={"input": "hi", "text": {"format": {
        "type": "json_schema", "name": "x", "schema": {"type": "nonsense"}}}})
    assert response.status_code == 400 and response.json()["error"]["type"] == "invalid_request_error"
