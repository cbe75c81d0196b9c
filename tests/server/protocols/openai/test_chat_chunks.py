"""Chat events to OpenAI wire chunks (no model, no HTTP): reasoning_content and tool-call deltas as clients
expect them, and the whole answer folded from those same chunks. A Qwen3 answer is scripted here (no Qwen3
weights)."""

from __future__ import annotations

import json
from typing import Any

from qwen_stream.server.protocols.openai.chat_renderer import ChatRenderer
from qwen_stream.types import FinishReason, StreamEvent, ToolCall, ToolCallDelta

CALL = ToolCall("call_1", "get_weather", '{"city": "Paris"}')


def events() -> list[StreamEvent]:
    return [
        StreamEvent(delta="", text="", token_ids=[1], reasoning_delta="Need weather.", reasoning="Need weather."),
        StreamEvent(delta="", text="", token_ids=[2], reasoning="Need weather.",
                    tool_call_deltas=[ToolCallDelta(0, "call_1", "get_weather", '{"city": ')],
                    tool_calls=[ToolCall("call_1", "get_weather", '{"city": ')]),
        StreamEvent(delta="", text="", token_ids=[3], reasoning="Need weather.",
                    tool_call_deltas=[ToolCallDelta(0, arguments='"Paris"}')], tool_calls=[CALL],
                    finish_reason=FinishReason.TOOL_CALLS),
    ]


def renderer() -> ChatRenderer:
    return ChatRenderer("m", 1, strings=None)  # type: ignore[arg-type]  # no logprobs: no token strings needed


def wire(chat: ChatRenderer, event: StreamEvent) -> list[dict[str, Any]]:
    return [json.loads(chunk.model_dump_json()) for chunk in chat.feed(event)]


def whole_message(stream: list[StreamEvent]) -> dict[str, Any]:
    chat = renderer()
    for event in stream:
        chat.feed(event)
    return json.loads(chat.whole().model_dump_json(exclude_none=True))["choices"][0]["message"]


def test_stream_chunks_carry_reasoning_then_the_call_in_pieces() -> None:
    chat = renderer()
    frames = [frame for event in events() for frame in wire(chat, event)]
    deltas = [f["choices"][0]["delta"] for f in frames]
    assert deltas[0] == {"reasoning_content": "Need weather."}
    assert deltas[1] == {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                                         "function": {"name": "get_weather", "arguments": '{"city": '}}]}
    assert deltas[2] == {"tool_calls": [{"index": 0, "function": {"arguments": '"Paris"}'}}]}
    assert deltas[3] == {} and frames[3]["choices"][0]["finish_reason"] == "tool_calls"


def test_the_whole_message_is_the_stream_folded() -> None:
    assert whole_message(events()) == {"role": "assistant", "reasoning_content": "Need weather.",
                                       "tool_calls": [{"id": "call_1", "type": "function",
                                                       "function": {"name": "get_weather",
                                                                    "arguments": '{"city": "Paris"}'}}]}
    plain = [StreamEvent(delta="H", text="H", token_ids=[1]),
             StreamEvent(delta="i", text="Hi", token_ids=[2], finish_reason=FinishReason.STOP)]
    assert whole_message(plain) == {"role": "assistant", "content": "Hi"}
    assert whole_message([]) == {"role": "assistant", "content": ""}
