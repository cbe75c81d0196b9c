"""The output layer with a message parser: engine ids (real Qwen tokenizer, also one byte per token) in, content,
reasoning and tool-call events out; streamed pieces join to the final message, also across stop strings."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qwen_stream.client.streams import merge_events
from qwen_stream.output.detokenizer import token_bytes_table
from qwen_stream.output.message import MessageParser, make_tool_parser
from qwen_stream.output.processor import OutputProcessor
from qwen_stream.output.reasoning import ReasoningParser
from qwen_stream.types import FinishReason, SamplingParams, StreamEvent, TokenOutput

IM_END = 151645
ANSWER = ('<think>\nNeed the weather in Zürich.\n</think>\n\nChecking 🌦.\n<tool_call>\n'
          '{"name": "get_weather", "arguments": {"city": "Zürich"}}\n</tool_call>')


def byte_ids(tokenizer: Any, text: str) -> list[int]:
    """One token per byte: the worst split a byte-level vocabulary allows (characters and tags cut everywhere)."""
    table = token_bytes_table(tokenizer).with_special
    single = {raw: i for i, raw in enumerate(table) if len(raw) == 1}
    return [single[bytes([b])] for b in text.encode()]


def run(tokenizer: Any, ids: list[int], params: SamplingParams, finish: FinishReason) -> list[StreamEvent]:
    parser = MessageParser(reasoning=ReasoningParser(), tools=make_tool_parser("hermes"))
    processor = OutputProcessor(tokenizer, params, parser=parser)
    events = []
    for n, token_id in enumerate(ids):
        last = n == len(ids) - 1
        events.append(processor.process(TokenOutput("r", [token_id], finish if last else None, 5)))
        if events[-1].finished:
            break
    return events


@pytest.mark.parametrize("per_byte", [False, True])
def test_pieces_join_to_the_final_message(qwen_tokenizer: Any, per_byte: bool) -> None:
    ids = byte_ids(qwen_tokenizer, ANSWER) if per_byte else qwen_tokenizer.encode(ANSWER)
    events = run(qwen_tokenizer, [*ids, IM_END], SamplingParams(), FinishReason.STOP)
    final = events[-1]
    assert final.finish_reason is FinishReason.TOOL_CALLS
    assert final.text == "".join(e.delta for e in events) == "Checking 🌦.\n"
    assert final.reasoning == "".join(e.reasoning_delta for e in events) == "Need the weather in Zürich."
    (call,) = final.tool_calls
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Zürich"}
    assert "".join(d.arguments for e in events for d in e.tool_call_deltas) == call.arguments
    merged = merge_events(events)  # a reader that lagged the whole way gets the same message
    assert merged.text == final.text and merged.reasoning == final.reasoning
    assert [(d.id, d.name, d.arguments) for d in merged.tool_call_deltas] == [(call.id, call.name, call.arguments)]


@pytest.mark.parametrize("stop", ["</tool_call>\nEND", "<tool_call>\n{\"name\": \"x\"", "\n</think>\nX"])
def test_tags_that_are_also_the_start_of_a_stop_string(qwen_tokenizer: Any, stop: str) -> None:
    """The stop matcher holds a tag back (it could be the stop string), then lets it go: same message."""
    ids = byte_ids(qwen_tokenizer, ANSWER)
    events = run(qwen_tokenizer, [*ids, IM_END], SamplingParams(stop=(stop,)), FinishReason.STOP)
    assert events[-1].text == "Checking 🌦.\n" and events[-1].tool_calls[0].name == "get_weather"


def test_stop_string_inside_a_call_ends_it_where_it_stands(qwen_tokenizer: Any) -> None:
    ids = byte_ids(qwen_tokenizer, ANSWER)
    events = run(qwen_tokenizer, [*ids, IM_END], SamplingParams(stop=("Zürich\"}",)), FinishReason.STOP)
    final = events[-1]
    assert final.finish_reason is FinishReason.TOOL_CALLS and final.tool_calls[0].arguments == '{"city": "'
    assert "<tool_call>" not in final.text


def test_length_finish_stays_length(qwen_tokenizer: Any) -> None:
    ids = qwen_tokenizer.encode(ANSWER)
    events = run(qwen_tokenizer, ids, SamplingParams(), FinishReason.LENGTH)
    assert events[-1].finish_reason is FinishReason.LENGTH and events[-1].tool_calls
