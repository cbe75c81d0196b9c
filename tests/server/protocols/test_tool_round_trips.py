"""Tool round trips through /v1/responses, /v1/messages and /api/chat on the tiny model with Qwen2.5's real
template, each with its own official client: a forced call (grammar-constrained), streamed and whole, then the
tool's result sent back in that protocol's own shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import ollama
import openai
import pytest

from qwen_stream.output.detokenizer import token_bytes_table
from qwen_stream.server.app import create_app
from tests.support.live_server import LiveServer, wait_until_idle

PARAMETERS = {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
              "required": ["city"]}
ASK = "What is the weather in Paris?"


@pytest.fixture(scope="module")
def tool_server(templated_model: Any) -> Iterator[LiveServer]:
    """Random weights pad optional JSON whitespace forever: this server's model is biased against it by default
    (none of these protocols has logit_bias), so forced calls end in a few tokens."""
    model = templated_model("qwen2_5")
    table = token_bytes_table(model.tokenizer).with_special
    blank = tuple((i, -100.0) for i, raw in enumerate(table) if raw and not raw.strip())
    default = model.inputs.default_params
    model.inputs.default_params = default.with_(logit_bias=blank, temperature=0.0)
    try:
        with LiveServer(create_app(model, served_model_name="tiny-tools", model_aliases=["m"])) as live:
            yield live
        assert wait_until_idle(model)
    finally:
        model.inputs.default_params = default


def test_responses_function_call_round_trip(tool_server: LiveServer) -> None:
    client = openai.OpenAI(base_url=f"{tool_server.url}/v1", api_key="x", max_retries=0, timeout=120)
    tool = {"type": "function", "name": "get_weather", "description": "Weather in a city", "parameters": PARAMETERS}
    args: dict[str, Any] = {"model": "m", "input": ASK, "tools": [tool], "tool_choice": "required",
                            "parallel_tool_calls": False, "max_output_tokens": 80}
    whole = client.responses.create(**args)
    [call] = whole.output
    assert whole.status == "completed" and call.type == "function_call" and call.name == "get_weather"
    assert json.loads(call.arguments)["city"] in ("Paris", "Oslo")

    events = list(client.responses.create(stream=True, **args))
    kinds = [e.type for e in events]
    assert kinds[2] == "response.output_item.added" and events[2].item.type == "function_call"
    assert kinds[-3:] == ["response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    pieces = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    assert pieces == events[-3].arguments == call.arguments

    answer = client.responses.create(model="m", previous_response_id=whole.id, tools=[tool], max_output_tokens=4,
                                     input=[{"type": "function_call_output", "call_id": call.call_id,
                                             "output": '{"temp_c": 18}'}])
    assert answer.output[0].type == "message" and answer.usage.input_tokens > whole.usage.input_tokens
    named = client.responses.create(**{**args, "tool_choice": {"type": "function", "name": "get_weather"}})
    assert named.output[0].name == "get_weather"


def test_anthropic_tool_use_round_trip(tool_server: LiveServer) -> None:
    client = anthropic.Anthropic(base_url=tool_server.url, api_key="x", max_retries=0, timeout=120)
    tool = {"name": "get_weather", "description": "Weather in a city", "input_schema": PARAMETERS}
    args: dict[str, Any] = {"model": "m", "max_tokens": 80, "messages": [{"role": "user", "content": ASK}],
                            "tools": [tool], "tool_choice": {"type": "any", "disable_parallel_tool_use": True}}
    whole = client.messages.create(**args)
    [use] = whole.content
    assert whole.stop_reason == "tool_use" and use.type == "tool_use" and use.name == "get_weather"
    assert use.input["city"] in ("Paris", "Oslo")
    with client.messages.stream(**args) as stream:
        partial = "".join(e.delta.partial_json for e in stream
                          if e.type == "content_block_delta" and e.delta.type == "input_json_delta")
        final = stream.get_final_message()
    assert json.loads(partial) == use.input and final.content[0].input == use.input

    history = [{"role": "user", "content": ASK}, {"role": "assistant", "content": [use.model_dump()]},
               {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18 C"}]}]
    answer = client.messages.create(model="m", max_tokens=4, tools=[tool], messages=history)
    assert answer.stop_reason == "max_tokens" and answer.content[0].type == "text"
    with_tools = client.messages.count_tokens(model="m", messages=history, tools=[tool]).input_tokens
    assert with_tools == answer.usage.input_tokens + answer.usage.cache_read_input_tokens
    assert with_tools > client.messages.count_tokens(model="m", messages=history[:1]).input_tokens


def test_ollama_tool_history_is_shown_to_the_model(tool_server: LiveServer) -> None:
    client = ollama.Client(host=tool_server.url, timeout=120)
    # Qwen2.5's template: tools, no thinking; the native runner gives hidden states: embeddings too
    assert client.show("m").capabilities == ["completion", "tools", "embedding"]
    tool = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                             "parameters": PARAMETERS}}
    history = [{"role": "user", "content": ASK},
               {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "get_weather",
                                                                                 "arguments": {"city": "Paris"}}}]},
               {"role": "tool", "content": "18 C", "tool_name": "get_weather"}]
    answer = client.chat(model="m", messages=history, tools=[tool], options={"num_predict": 4})
    plain = client.chat(model="m", messages=history[:1], options={"num_predict": 4})
    assert answer.done_reason == "length" and answer.prompt_eval_count > plain.prompt_eval_count + 10
    streamed = "".join(p.message.content for p in client.chat(model="m", messages=history, tools=[tool],
                                                                options={"num_predict": 4}, stream=True))
    assert streamed == answer.message.content


def test_tool_mistakes_are_each_protocols_400(tool_server: LiveServer) -> None:
    import httpx

    url = tool_server.url
    responses = httpx.post(f"{url}/v1/responses", json={"input": "hi", "tools": [{"type": "web_search"}]})
    assert responses.status_code == 400 and "function tools" in responses.json()["error"]["message"]
    unknown = httpx.post(f"{url}/v1/responses", json={
        "input": "hi", "tools": [{"type": "function", "name": "f", "parameters": PARAMETERS}],
        "tool_choice": {"type": "function", "name": "nope"}})
    assert unknown.status_code == 400 and "nope" in unknown.json()["error"]["message"]
    messages = httpx.post(f"{url}/v1/messages", json={
        "model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "bash_20250124", "name": "bash"}]})
    assert messages.status_code == 400 and messages.json()["error"]["type"] == "invalid_request_error"
    no_schema = httpx.post(f"{url}/v1/messages", json={
        "model": "m", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}], "tools": [{"name": "f"}]})
    assert no_schema.status_code == 400 and "input_schema" in no_schema.json()["error"]["message"]
    api = httpx.post(f"{url}/api/chat", json={"model": "m", "messages": [{"role": "user", "content": "hi"}],
                                              "tools": [{"type": "function", "function": {}}]})
    assert api.status_code == 400 and set(api.json()) == {"error"}
