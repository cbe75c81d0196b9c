"""Tools over HTTP on the tiny model with Qwen2.5's real template: the openai SDK and LangChain against a live
server, forced calls streamed as deltas, reasoning fields, /tokenize, and bad input answered 400 while serving."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from qwen_stream.output.detokenizer import token_bytes_table
from qwen_stream.server.app import create_app
from tests.support.live_server import LiveServer

TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]}},
                   "required": ["city"]}}}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def tool_server(templated_model: Any) -> Iterator[LiveServer]:
    with LiveServer(create_app(templated_model("qwen2_5"), served_model_name="tiny-tools", model_aliases=["m"])) as live:
        yield live


@pytest.fixture(scope="module")
def no_whitespace(templated_model: Any) -> dict[str, float]:
    """Random weights pad optional JSON whitespace forever; a bias against it keeps forced calls short (where the
    grammar requires whitespace the other tokens are masked to -inf, so it still comes)."""
    table = token_bytes_table(templated_model("qwen2_5").tokenizer).with_special
    return {str(i): -100.0 for i, raw in enumerate(table) if raw and not raw.strip()}


@pytest.fixture()
def sdk(tool_server: LiveServer) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{tool_server.url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_openai_sdk_forced_call_streamed_and_whole(sdk: Any, no_whitespace: dict[str, float]) -> None:
    args: dict[str, Any] = {"model": "tiny-tools", "messages": ASK, "tools": [TOOL], "tool_choice": "required",
                            "temperature": 0, "max_tokens": 80, "logit_bias": no_whitespace,
                            "parallel_tool_calls": False}
    whole = sdk.chat.completions.create(**args)
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function" and call.function.name == "get_weather" and call.id.startswith("call_")
    assert json.loads(call.function.arguments)["city"] in ("Paris", "Oslo")

    chunks = list(sdk.chat.completions.create(stream=True, **args))
    pieces = [tc for c in chunks for tc in (c.choices[0].delta.tool_calls or []) if c.choices]
    assert pieces[0].index == 0 and pieces[0].id and pieces[0].type == "function"
    assert pieces[0].function.name == "get_weather"
    assert all(p.id is None and p.function.name is None for p in pieces[1:])
    assert "".join(p.function.arguments or "" for p in pieces) == call.function.arguments
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "tool_calls"


def test_tool_result_turn_and_named_choice(sdk: Any, no_whitespace: dict[str, float]) -> None:
    named = {"type": "function", "function": {"name": "get_weather"}}
    first = sdk.chat.completions.create(model="tiny-tools", messages=ASK, tools=[TOOL], tool_choice=named, temperature=0,
                                        max_tokens=80, logit_bias=no_whitespace, parallel_tool_calls=False)
    message = first.choices[0].message
    history = [*ASK, message.model_dump(exclude_none=True),
               {"role": "tool", "tool_call_id": message.tool_calls[0].id, "content": '{"temp_c": 18}'}]
    final = sdk.chat.completions.create(model="tiny-tools", messages=history, tools=[TOOL], temperature=0, max_tokens=4)
    assert final.choices[0].finish_reason in ("stop", "length") and final.choices[0].message.tool_calls is None


def test_langchain_bind_tools(tool_server: LiveServer, no_whitespace: dict[str, float]) -> None:
    from langchain_openai import ChatOpenAI

    get_weather = TOOL  # an OpenAI tool dict: its enum keeps random weights' argument short
    llm = ChatOpenAI(base_url=f"{tool_server.url}/v1", api_key="unused", model="tiny-tools", temperature=0,
                     max_tokens=80, max_retries=0, logit_bias=no_whitespace)
    reply = llm.bind_tools([get_weather], tool_choice="get_weather", parallel_tool_calls=False).invoke("Paris?")
    assert [(c["name"], sorted(c["args"])) for c in reply.tool_calls] == [("get_weather", ["city"])]
    streamed = None
    for chunk in llm.bind_tools([get_weather], tool_choice="required", parallel_tool_calls=False).stream("Paris?"):
        streamed = chunk if streamed is None else streamed + chunk
    assert streamed is not None and [c["name"] for c in streamed.tool_calls] == ["get_weather"]


def test_tokenize_and_detokenize(tool_server: LiveServer, templated_model: Any) -> None:
    window = templated_model("qwen2_5").context_length
    with httpx.Client(base_url=tool_server.url, timeout=60) as http:
        plain = http.post("/tokenize", json={"prompt": "Hello world"}).json()
        assert plain["count"] == len(plain["tokens"]) > 0 and plain["max_model_len"] == window == 512
        assert http.post("/detokenize", json={"tokens": plain["tokens"]}).json()["prompt"] == "Hello world"
        chat = http.post("/tokenize", json={"messages": ASK, "tools": [TOOL]}).json()
        text = http.post("/detokenize", json={"tokens": chat["tokens"]}).json()["prompt"]
        assert "<tools>" in text and "get_weather" in text and text.endswith("<|im_start|>assistant\n")
        assert http.post("/detokenize", json={"tokens": [10**9]}).status_code == 400
        assert http.post("/tokenize", json={}).status_code == 400


BAD = [
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object",
                                                                              "properties": 5}}}]},
     "not a valid JSON schema"),
    ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, "function.name"),
    ({"tools": [TOOL], "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "not among the tools"),
    ({"tool_choice": "required"}, "no tools"),
    ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {  # valid JSON schema, no grammar
        "type": "object", "properties": {"x": {"$ref": "#/$defs/missing"}}}}}], "tool_choice": "required"},
     "cannot compile"),
    ({"messages": [*ASK, {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
        "name": "get_weather", "arguments": "{}"}}]}, {"role": "tool", "content": "sunny"}]}, "tool_call_id"),
    ({"messages": [*ASK, {"role": "assistant", "tool_calls": [{"id": "c1", "type": "function", "function": {
        "name": "get_weather", "arguments": "{not json"}}]}, {"role": "tool", "tool_call_id": "c1",
                                                             "content": "x"}]}, "not valid JSON"),
    ({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "http://x/y.png"}}]}]},
     "image_url"),
    ({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    ({"logit_bias": {"99999999": 5}}, "vocabulary"),
    ({"logit_bias": {"1": 500}}, "logit_bias"),
    ({"min_p": 2.0}, "min_p"),
    ({"chat_template_kwargs": {"add_generation_prompt": False}}, "add_generation_prompt"),
]


@pytest.mark.parametrize(("changes", "mentions"), BAD)
def test_bad_tool_input_is_a_400_and_the_server_keeps_serving(tool_server: LiveServer, changes: dict[str, Any],
                                                              mentions: str) -> None:
    body = {"model": "tiny-tools", "messages": ASK, "max_tokens": 2, "temperature": 0, **changes}
    with httpx.Client(base_url=tool_server.url, timeout=60) as http:
        response = http.post("/v1/chat/completions", json=body)
        assert response.status_code == 400, response.text
        assert mentions in response.json()["error"]["message"], response.json()
        ok = http.post("/v1/chat/completions", json={"model": "tiny-tools", "messages": ASK, "max_tokens": 2})
        assert ok.status_code == 200, ok.text


def test_model_without_tool_template_says_so(http: httpx.Client) -> None:
    """The session's plain tiny model (ChatML template without tools): a 400 that says why, not a silent drop."""
    body = {"model": "m", "messages": ASK, "max_tokens": 2, "tools": [TOOL]}
    response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 400 and "no tool support" in response.json()["error"]["message"]
