"""The grammar glue on the real Qwen tokenizer: masks, acceptance, the forced stop, caching and clear errors."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from qwen_stream.inputs.grammars import GrammarError, Grammars

VOCAB = 151936  # the Qwen2.5 models' logits width: wider than the tokenizer (151665 ids), so padding is masked too
IM_END = 151645
SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
          "required": ["city", "days"], "additionalProperties": False}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]


@pytest.fixture(scope="module")
def grammars(qwen_tokenizer: Any) -> Grammars:
    return Grammars(qwen_tokenizer, vocab_size=VOCAB, stop_token_ids=[IM_END])


def allowed(matcher: Any) -> torch.Tensor:
    logits = torch.zeros(VOCAB)
    matcher.mask_logits(logits)
    return torch.isfinite(logits)


def walk(matcher: Any, ids: list[int]) -> list[bool]:
    """Feed ids one by one, checking each was allowed by the mask before it is accepted."""
    return [bool(allowed(matcher)[i]) and matcher.accept_token(i) for i in ids]


def test_mask_allows_only_what_can_start_the_object(grammars: Grammars, qwen_tokenizer: Any) -> None:
    mask = allowed(grammars.json_schema(SCHEMA).new_matcher())
    ok = mask.nonzero().flatten().tolist()
    assert ok and all(qwen_tokenizer.decode([i]).lstrip().startswith("{") for i in ok)
    assert not mask[IM_END] and not mask[VOCAB - 1]  # no stop yet, and no padding id


def test_a_valid_answer_is_accepted_and_then_only_the_stop_token_remains(grammars: Grammars,
                                                                        qwen_tokenizer: Any) -> None:
    matcher = grammars.json_schema(SCHEMA).new_matcher()
    assert all(walk(matcher, qwen_tokenizer.encode('{"city": "Paris", "days": 3}', add_special_tokens=False)))
    assert allowed(matcher).nonzero().flatten().tolist() == [IM_END]  # the grammar ended: EOS is forced
    assert not matcher.is_terminated()
    assert matcher.accept_token(IM_END) and matcher.is_terminated()


def test_a_forbidden_token_is_rejected_without_moving_the_state(grammars: Grammars, qwen_tokenizer: Any) -> None:
    matcher = grammars.json_schema(SCHEMA).new_matcher()
    assert not matcher.accept_token(qwen_tokenizer.encode("hello", add_special_tokens=False)[0])
    assert all(walk(matcher, qwen_tokenizer.encode('{"city"', add_special_tokens=False)))


def test_json_object_and_response_format(grammars: Grammars, qwen_tokenizer: Any) -> None:
    assert grammars.response_format(None) is None and grammars.response_format({"type": "text"}) is None
    assert grammars.response_format({"type": "json_object"}) is grammars.json_object()
    by_format = grammars.response_format({"type": "json_schema", "json_schema": {"name": "w", "schema": SCHEMA,
                                                                                  "strict": True}})
    assert by_format is grammars.json_schema(json.dumps(SCHEMA))  # cached by schema text
    matcher = grammars.json_object().new_matcher()
    assert all(walk(matcher, qwen_tokenizer.encode('{"any": [1, {"x": null}]}', add_special_tokens=False)))
    assert allowed(matcher)[IM_END]


@pytest.mark.parametrize("bad, message", [
    ({"type": "foo"}, 'Unsupported type "foo"'),
    ({"type": "string", "pattern": "(("}, "parenthesis is not closed"),
    ({"$ref": "#/defs/missing"}, "Cannot find field"),
    ("{not json", "not valid JSON"),
    (5, "must be an object"),
])
def test_a_schema_the_library_rejects_is_a_grammar_error(grammars: Grammars, bad: Any, message: str) -> None:
    with pytest.raises(GrammarError, match=message) as info:
        grammars.json_schema(bad)
    assert "/project/" not in str(info.value)  # xgrammar's C++ source location is trimmed


@pytest.mark.parametrize("response_format", [{"type": "xml"}, {"type": "json_schema"}, "json"])
def test_a_bad_response_format_is_a_grammar_error(grammars: Grammars, response_format: Any) -> None:
    with pytest.raises(GrammarError, match="response_format"):
        grammars.response_format(response_format)


def test_the_cache_is_bounded(qwen_tokenizer: Any) -> None:
    small = Grammars(qwen_tokenizer, vocab_size=VOCAB, stop_token_ids=[IM_END], cache_size=2)
    first = small.json_schema({"type": "integer"})
    small.json_schema({"type": "string"})
    assert small.json_schema({"type": "integer"}) is first
    small.json_schema({"type": "boolean"})  # evicts the least recently used: string
    assert small.json_schema({"type": "integer"}) is first
    assert len(small._cache) == 2


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_tool_call_grammar_forces_a_hermes_call(grammars: Grammars, qwen_tokenizer: Any, tool_choice: Any) -> None:
    matcher = grammars.tool_calls(TOOLS, tool_choice).new_matcher()
    assert not matcher.accept_token(qwen_tokenizer.encode("Sure", add_special_tokens=False)[0])
    call = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>'
    assert all(walk(matcher, qwen_tokenizer.encode(call, add_special_tokens=False)))
    assert allowed(matcher)[IM_END]


def test_tool_call_grammar_limits_names_to_the_tools(grammars: Grammars, qwen_tokenizer: Any) -> None:
    matcher = grammars.tool_calls(TOOLS, "required").new_matcher()
    ids = qwen_tokenizer.encode('<tool_call>\n{"name": "rm_rf", "arguments": {}}', add_special_tokens=False)
    assert not all(walk(matcher, ids))
    with pytest.raises(GrammarError, match="not found"):
        grammars.tool_calls(TOOLS, {"type": "function", "function": {"name": "rm_rf"}})
