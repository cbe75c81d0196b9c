"""The pure parts of the Responses, Anthropic and Ollama translations: blocks, the response store, input items."""

from __future__ import annotations

from typing import Any

import pytest

from qwen_stream.server.pipeline.answer_blocks import AnswerBlocks
from qwen_stream.server.protocols.anthropic.protocol import MessagesRequest
from qwen_stream.server.protocols.ollama.protocol import Options
from qwen_stream.server.protocols.responses.protocol import ResponsesRequest, input_messages
from qwen_stream.server.protocols.responses.store import ResponseStore, StoredResponse
from qwen_stream.server.wire.errors import APIError
from qwen_stream.server.wire.refusals import refusal
from qwen_stream.types import StreamEvent, ToolCallDelta


def event(delta: str) -> StreamEvent:
    return StreamEvent(delta=delta, text="", token_ids=[])


def test_text_deltas_make_one_block_started_and_stopped_once() -> None:
    blocks = AnswerBlocks()
    out = [e for d in ("Hel", "", "lo") for e in blocks.feed(event(d))] + blocks.close()
    assert [(e.kind, e.delta) for e in out] == [("start", ""), ("delta", "Hel"), ("delta", "lo"), ("stop", "")]
    assert [(b.kind, b.text) for b in blocks.blocks] == [("text", "Hello")]
    assert blocks.close() == []  # closing twice is harmless


def test_thinking_text_and_tool_calls_make_blocks_in_order() -> None:
    blocks = AnswerBlocks()
    events = [StreamEvent(delta="", text="", token_ids=[], reasoning_delta="Hmm, "),
              StreamEvent(delta="Let me check.", text="", token_ids=[], reasoning_delta="weather."),
              StreamEvent(delta="", text="", token_ids=[], tool_call_deltas=[
                  ToolCallDelta(0, id="call_1", name="get_weather", arguments='{"city": '),
                  ToolCallDelta(0, arguments='"Paris"}'), ToolCallDelta(1, id="call_2", name="now")])]
    out = [e for ev in events for e in blocks.feed(ev)] + blocks.close()
    assert [(e.kind, e.block.index) for e in out] == [
        ("start", 0), ("delta", 0), ("delta", 0), ("stop", 0), ("start", 1), ("delta", 1), ("stop", 1),
        ("start", 2), ("delta", 2), ("delta", 2), ("stop", 2), ("start", 3), ("stop", 3)]
    kinds = [(b.kind, b.text, b.name, b.call_id) for b in blocks.blocks]
    assert kinds == [("reasoning", "Hmm, weather.", "", ""), ("text", "Let me check.", "", ""),
                     ("tool_call", '{"city": "Paris"}', "get_weather", "call_1"), ("tool_call", "", "now", "call_2")]
    assert blocks.blocks[2].arguments() == {"city": "Paris"} and blocks.blocks[3].arguments() == {}
    blocks.blocks[2].text = '{"city": "Par'  # cut by the token limit: no object to hand on
    assert blocks.blocks[2].arguments() == {}


def test_an_empty_answer_has_no_block() -> None:
    blocks = AnswerBlocks()
    assert blocks.feed(event("")) == [] and blocks.close() == [] and blocks.blocks == []


def stored(n: int) -> StoredResponse:
    return StoredResponse([{"role": "user", "content": str(n)}], {"id": str(n)})


def test_response_store_drops_the_least_recently_used() -> None:
    store = ResponseStore(2)
    store.put("a", stored(1))
    store.put("b", stored(2))
    assert store.get("a").body == {"id": "1"}  # now "b" is the least recently used
    store.put("c", stored(3))
    assert len(store) == 2
    with pytest.raises(APIError) as missing:
        store.get("b", param="previous_response_id")
    assert missing.value.status == 404 and missing.value.detail.param == "previous_response_id"
    assert store.get("c").conversation == [{"role": "user", "content": "3"}]


def test_response_store_hands_out_copies_and_can_be_off() -> None:
    store = ResponseStore(4)
    store.put("a", stored(1))
    store.get("a").conversation.append({"role": "user", "content": "changed"})
    assert len(store.get("a").conversation) == 1
    store.delete("a")
    with pytest.raises(APIError):
        store.delete("a")
    off = ResponseStore(0)
    off.put("a", stored(1))
    assert len(off) == 0
    with pytest.raises(ValueError, match=">= 0"):
        ResponseStore(-1)


def responses_body(**fields: Any) -> ResponsesRequest:
    return ResponsesRequest.model_validate(fields)


def test_responses_input_items_become_chat_messages() -> None:
    assert input_messages(responses_body(input="Hi")) == [{"role": "user", "content": "Hi"}]
    items = [
        {"role": "developer", "content": "Be brief."},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather "},
                                                         {"type": "input_text", "text": "in Paris?"}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Checking."}]},
        {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
        {"type": "function_call", "call_id": "c2", "name": "get_time", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "22 C"},
    ]
    messages = input_messages(responses_body(input=items))
    assert messages[:2] == [{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": "Weather in Paris?"}]
    assert messages[2]["content"] == "Checking."
    assert [c["id"] for c in messages[2]["tool_calls"]] == ["c1", "c2"]  # one assistant turn, two calls
    assert messages[3] == {"role": "tool", "tool_call_id": "c1", "content": "22 C"}


@pytest.mark.parametrize(("item", "mentions"), [
    ({"role": "user", "content": [{"type": "input_image", "image_url": "x"}]}, "image"),
    ({"type": "function_call", "call_id": "c1"}, "input[0]"),
    ({"type": "computer_call"}, "computer_call"),
])
def test_responses_input_items_that_cannot_be_read_are_400(item: Any, mentions: str) -> None:
    with pytest.raises(Exception) as error:
        input_messages(responses_body(input=[item]))
    answer = refusal(error.value)
    assert answer is not None and answer.status == 400 and mentions in answer.detail.message


def test_anthropic_messages_become_chat_messages() -> None:
    body = MessagesRequest.model_validate({
        "model": "m", "max_tokens": 5, "system": [{"type": "text", "text": "Be brief."}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]},
                     {"role": "assistant", "content": [{"type": "thinking", "thinking": "hm", "signature": "s"},
                                                       {"type": "text", "text": "Hello"}]},
                     {"role": "user", "content": "Bye"}]})
    assert body.chat_messages() == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                                    {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}]


def test_ollama_options_map_to_sampling_parameters() -> None:
    options = Options.model_validate({"temperature": 0.2, "num_predict": -1, "stop": ["\n"], "repeat_penalty": 1.1,
                                      "num_ctx": 8192})
    sampling = options.sampling().overrides()
    assert sampling["temperature"] == 0.2 and "max_new_tokens" not in sampling  # -1: no limit of its own
    assert sampling["stop"] == ("\n",) and sampling["repetition_penalty"] == 1.1
    assert Options.model_validate({"num_predict": 7}).sampling().overrides()["max_new_tokens"] == 7
