"""A real model calls a real tool through each protocol: Qwen2.5-Coder-1.5B-Instruct behind a live server, asked
for the weather in Paris by the openai (Responses), anthropic and ollama clients, calls get_weather(city="Paris")
and then answers from the tool's result.

The result turn does not offer the tool again: at temperature 0 this 1.5B model, shown the tool once more, calls it
again with the same arguments instead of answering (the Python API does the same: ``qwen.chat(messages=...,
tools=TOOLS)`` after the tool message gives a second get_weather call; without ``tools`` it answers "18 degrees")."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import ollama
import openai
import pytest

from qwen_stream.api import ChatModel
from qwen_stream.server.app import create_app
from tests.support.live_server import LiveServer

pytestmark = pytest.mark.slow

PARAMETERS = {"type": "object", "properties": {"city": {"type": "string", "description": "The city"}},
              "required": ["city"]}
DESCRIPTION = "Get the current weather in a city."
ASK = "What is the weather in Paris?"
RESULT = json.dumps({"city": "Paris", "temperature_c": 18})


@pytest.fixture(scope="module")
def qwen_server(qwen_coder: ChatModel) -> Iterator[LiveServer]:
    """The session's Qwen2.5-Coder-1.5B (tests/e2e/conftest.py: llama.cpp, or the PyTorch runner in bfloat16 where
    llama-cpp-python is missing) behind a live server: the protocols' tool plumbing is the point, on any runner."""
    with LiveServer(create_app(qwen_coder, model_aliases=["m"])) as live:
        yield live


def _is_paris(arguments: dict[str, Any]) -> bool:
    return "paris" in str(arguments.get("city", "")).lower()


def test_responses_tool_round_trip(qwen_server: LiveServer) -> None:
    client = openai.OpenAI(base_url=f"{qwen_server.url}/v1", api_key="x", max_retries=0, timeout=600)
    tools = [{"type": "function", "name": "get_weather", "description": DESCRIPTION, "parameters": PARAMETERS}]
    first = client.responses.create(model="m", input=ASK, tools=tools, temperature=0, max_output_tokens=100)
    [call] = [item for item in first.output if item.type == "function_call"]
    assert call.name == "get_weather" and _is_paris(json.loads(call.arguments)), first.output
    final = client.responses.create(model="m", previous_response_id=first.id, temperature=0,
                                    max_output_tokens=60, input=[{"type": "function_call_output",
                                                                  "call_id": call.call_id, "output": RESULT}])
    assert "18" in final.output_text, final.output_text


def test_anthropic_tool_round_trip(qwen_server: LiveServer) -> None:
    client = anthropic.Anthropic(base_url=qwen_server.url, api_key="x", max_retries=0, timeout=600)
    tools = [{"name": "get_weather", "description": DESCRIPTION, "input_schema": PARAMETERS}]
    messages: list[dict[str, Any]] = [{"role": "user", "content": ASK}]
    first = client.messages.create(model="m", max_tokens=100, tools=tools, messages=messages,
                                   extra_body={"temperature": 0})
    [use] = [block for block in first.content if block.type == "tool_use"]
    assert first.stop_reason == "tool_use" and use.name == "get_weather" and _is_paris(use.input), first.content
    messages += [{"role": "assistant", "content": [block.model_dump() for block in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": RESULT}]}]
    with client.messages.stream(model="m", max_tokens=60, messages=messages,
                                extra_body={"temperature": 0}) as stream:
        text = "".join(stream.text_stream)
    assert "18" in text, text


def test_ollama_tool_round_trip(qwen_server: LiveServer) -> None:
    client = ollama.Client(host=qwen_server.url, timeout=600)
    tools = [{"type": "function", "function": {"name": "get_weather", "description": DESCRIPTION,
                                               "parameters": PARAMETERS}}]
    messages: list[Any] = [{"role": "user", "content": ASK}]
    first = client.chat(model="m", messages=messages, tools=tools, options={"temperature": 0, "num_predict": 100})
    [call] = first.message.tool_calls or []
    assert call.function.name == "get_weather" and _is_paris(dict(call.function.arguments)), first.message
    messages += [first.message, {"role": "tool", "content": RESULT, "tool_name": "get_weather"}]
    final = client.chat(model="m", messages=messages, options={"temperature": 0, "num_predict": 60})
    assert "18" in final.message.content, final.message.content
