"""Scripted engine events through each protocol's renderer, no model: thinking, text and tool calls become
Responses items, Anthropic content blocks and Ollama fields, streamed and whole alike."""

from __future__ import annotations

import json
from typing import Any

from qwen_stream.client.choices import TokenUsage
from qwen_stream.server.protocols.anthropic.renderer import MessageBuilder
from qwen_stream.server.protocols.ollama.renderer import OllamaRenderer
from qwen_stream.server.protocols.responses.events import ResponseBuilder
from qwen_stream.server.protocols.responses.protocol import ResponsesRequest
from qwen_stream.types import FinishReason, StreamEvent, ToolCallDelta


def script() -> list[StreamEvent]:
    """Thinking, a sentence, then a call to get_weather whose arguments arrive in two pieces."""
    def event(**fields: Any) -> StreamEvent:
        return StreamEvent(delta=fields.pop("delta", ""), text="", token_ids=[], **fields)

    return [event(reasoning_delta="The user wants "), event(reasoning_delta="weather."),
            event(delta="Checking."),
            event(tool_call_deltas=[ToolCallDelta(0, id="call_1", name="get_weather", arguments='{"city": ')]),
            event(tool_call_deltas=[ToolCallDelta(0, arguments='"Paris"}')], finish_reason=FinishReason.TOOL_CALLS,
                  num_prompt_tokens=30, num_generated_tokens=12, elapsed_s=0.5, time_to_first_token_s=0.1)]


def run(renderer: Any) -> list[dict[str, Any]]:
    events = renderer.start()
    for stream_event in script():
        events += renderer.feed(stream_event)
    usage = TokenUsage(prompt_tokens=30, completion_tokens=12, cached_tokens=4)
    return events + renderer.finish(script()[-1], usage)


def test_responses_items_for_thinking_text_and_a_call() -> None:
    builder = ResponseBuilder(ResponsesRequest.model_validate({"input": "Weather in Paris?"}), "m")
    events = run(builder)
    kinds = [e["type"] for e in events]
    assert kinds == [
        "response.created", "response.in_progress",
        "response.output_item.added", "response.content_part.added", "response.reasoning_text.delta",
        "response.reasoning_text.delta", "response.reasoning_text.done", "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added", "response.content_part.added", "response.output_text.delta",
        "response.output_text.done", "response.content_part.done", "response.output_item.done",
        "response.output_item.added", "response.function_call_arguments.delta",
        "response.function_call_arguments.delta", "response.function_call_arguments.done",
        "response.output_item.done", "response.completed"]
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    reasoning, message, call = events[-1]["response"]["output"]
    assert reasoning["type"] == "reasoning" and reasoning["content"] == [
        {"type": "reasoning_text", "text": "The user wants weather."}]
    assert message["content"][0]["text"] == "Checking."
    assert (call["type"], call["call_id"], call["name"], call["arguments"], call["status"]) == (
        "function_call", "call_1", "get_weather", '{"city": "Paris"}', "completed")
    assert [e["output_index"] for e in events if e["type"] == "response.output_item.added"] == [0, 1, 2]
    assert events[-1]["response"]["status"] == "completed"
    assert events[-1]["response"]["usage"]["input_tokens_details"]["cached_tokens"] == 4


def test_anthropic_blocks_for_thinking_text_and_a_call() -> None:
    builder = MessageBuilder("m", prompt_tokens=30)
    events = run(builder)
    starts = [e["content_block"]["type"] for e in events if e["type"] == "content_block_start"]
    assert starts == ["thinking", "text", "tool_use"]
    deltas = [e["delta"]["type"] for e in events if e["type"] == "content_block_delta"]
    assert deltas == ["thinking_delta", "thinking_delta", "text_delta", "input_json_delta", "input_json_delta"]
    assert events[-2]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert events[-2]["usage"]["input_tokens"] == 26 and events[-2]["usage"]["cache_read_input_tokens"] == 4
    message = builder.message()
    assert message["content"] == [{"type": "thinking", "thinking": "The user wants weather.", "signature": ""},
                                  {"type": "text", "text": "Checking."},
                                  {"type": "tool_use", "id": "call_1", "name": "get_weather",
                                   "input": {"city": "Paris"}}]


def test_ollama_fields_for_thinking_text_and_a_call() -> None:
    renderer = OllamaRenderer("chat", "m")
    chunks = run(renderer)
    messages = [c["message"] for c in chunks]
    assert [m.get("thinking") for m in messages[:2]] == ["The user wants ", "weather."]
    assert messages[2]["content"] == "Checking."
    assert messages[3]["tool_calls"] == [{"function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]
    assert chunks[-1]["done"] is True and chunks[-1]["done_reason"] == "stop"
    whole = renderer.whole()
    assert whole["message"] == {"role": "assistant", "content": "Checking.", "thinking": "The user wants weather.",
                                "tool_calls": messages[3]["tool_calls"]}
    assert whole["eval_count"] == 12 and whole["prompt_eval_count"] == 30
    generate = OllamaRenderer("generate", "m")
    run(generate)
    assert generate.whole()["response"] == "Checking." and generate.whole()["thinking"] == "The user wants weather."
    json.dumps(whole)  # all of it is JSON
