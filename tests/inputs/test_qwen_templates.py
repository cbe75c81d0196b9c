"""Qwen's real chat templates (tests/fixtures/chat_templates) on the tiny model: tools and history rendered as the
models were trained on them, Qwen3's thinking switch, and tool calls forced by the grammar, streamed and whole.

There are no Qwen3 weights here: reasoning is tested with Qwen3's template on the tiny random model, plus the
parser tests in tests/output."""

from __future__ import annotations

import json
from typing import Any

import pytest

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "enum": ["Paris", "Oslo"]},
                                                    "unit": {"type": "string", "enum": ["c", "f"]}},
                   "required": ["city", "unit"]}}}]
HISTORY = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Weather in Paris?"},
    {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": '{"temp_c": 18}'},
]
TEMPLATES = ["qwen2_5", "qwen3", "qwen3_coder"]


def no_optional_whitespace(model: Any) -> dict[int, float]:
    """A bias against whitespace-only tokens. The tool-call grammar allows any whitespace between JSON tokens and
    random weights would fill max_tokens with it; where the grammar demands whitespace, the masked alternatives
    are -inf, so a -100 bias still lets it through."""
    from qwen_stream.output.detokenizer import token_bytes_table

    table = token_bytes_table(model.tokenizer).with_special
    return {i: -100.0 for i, raw in enumerate(table) if raw and not raw.strip()}


@pytest.mark.parametrize("name", TEMPLATES)
def test_tools_and_a_tool_turn_render_as_the_template_writes_them(templated_model: Any, name: str) -> None:
    model = templated_model(name)
    text = model.inputs.prompter.build(HISTORY, max_prompt_tokens=4000, tools=TOOLS).text
    assert "<tools>" in text and "get_weather" in text and "Current weather in a city" in text
    if name == "qwen3_coder":
        assert "<function=get_weather>\n<parameter=city>\nParis\n</parameter>" in text
    else:  # arguments are an object for the template: a JSON string would have been quoted twice
        assert '{"name": "get_weather", "arguments": {"city": "Paris"}}' in text
    assert '<tool_response>\n{"temp_c": 18}\n</tool_response>' in text
    assert text.endswith("<|im_start|>assistant\n")


EXAMPLE = '<tool_call>\n{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'


@pytest.mark.parametrize("name", ["qwen2_5", "qwen3"])
def test_the_call_format_is_shown_in_single_braces(templated_model: Any, name: str) -> None:
    """Qwen2.5's template shows the example as {{"name": ...}} (braces in a Jinja string are text); the prompt
    the model sees has Qwen3's single braces, and nothing else of the template's text changes."""
    model = templated_model(name)
    ask = [{"role": "user", "content": "Weather in Paris?"}]
    text = model.inputs.prompter.build(ask, max_prompt_tokens=4000, tools=TOOLS).text
    assert EXAMPLE in text and "{{" not in text
    shipped = model.tokenizer.apply_chat_template(ask, tools=TOOLS, tokenize=False, add_generation_prompt=True)
    doubled = EXAMPLE.replace("{", "{{", 1).replace("}\n", "}}\n", 1)
    assert (doubled in shipped) == (name == "qwen2_5")
    assert shipped.replace(doubled, EXAMPLE) == text


def test_qwen3_thinking_switch_and_earlier_reasoning_dropped(templated_model: Any) -> None:
    model = templated_model("qwen3")
    history = [{"role": "user", "content": "2+2?"},
               {"role": "assistant", "content": "<think>\nsecret sums\n</think>\n\n4"},
               {"role": "user", "content": "And 3+3?"}]
    on = model.inputs.prompter.build(history, max_prompt_tokens=4000).text
    off = model.inputs.prompter.build(history, max_prompt_tokens=4000, template_kwargs={"enable_thinking": False}).text
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n") and on.endswith("assistant\n")
    assert "secret sums" not in on and "<|im_start|>assistant\n4<|im_end|>" in on
    with_off = model.stream("Hi", thinking=False, max_new_tokens=2, temperature=0)
    plain = model.stream("Hi", max_new_tokens=2, temperature=0)
    assert with_off.prompt_info.num_tokens > plain.prompt_info.num_tokens
    with_off.collect(), plain.collect()


def test_template_without_tools_is_refused(tiny_chat_model: Any) -> None:
    with pytest.raises(ValueError, match="no tool support"):
        tiny_chat_model.stream("Weather?", tools=TOOLS)


@pytest.mark.parametrize("name", TEMPLATES)
def test_forced_call_streams_pieces_that_join_to_the_answer(templated_model: Any, name: str) -> None:
    """tool_choice "required" is enforced by the grammar: even random weights can only write a valid call."""
    model = templated_model(name)
    kwargs: dict[str, Any] = {"tools": TOOLS, "tool_choice": "required", "temperature": 0, "max_new_tokens": 120,
                              "parallel_tool_calls": False, "thinking": False,
                              "logit_bias": no_optional_whitespace(model)}
    answer, _ = model.chat("Weather in Paris?", **kwargs)
    assert answer.finish_reason is not None and answer.finish_reason.value == "tool_calls", answer
    (call,) = answer.tool_calls
    assert call.name == "get_weather"
    arguments = json.loads(call.arguments)
    # strip(): Qwen3-Coder's XML values may carry whitespace the grammar allows around them
    assert arguments["city"].strip() in ("Paris", "Oslo") and arguments["unit"].strip() in ("c", "f")
    events = list(model.stream("Weather in Paris?", **kwargs))
    pieces = [d for e in events for d in e.tool_call_deltas]
    assert pieces[0].id == events[-1].tool_calls[0].id and pieces[0].name == "get_weather"
    assert "".join(d.arguments for d in pieces) == call.arguments  # greedy: the same call as chat()
    assert "".join(e.delta for e in events) == str(answer)


def test_named_function_and_unknown_name(templated_model: Any) -> None:
    model = templated_model("qwen2_5")
    choice = {"type": "function", "function": {"name": "get_weather"}}
    answer, _ = model.chat("Hi", tools=TOOLS, tool_choice=choice, temperature=0, max_new_tokens=120,
                           logit_bias=no_optional_whitespace(model))
    assert [c.name for c in answer.tool_calls] == ["get_weather"]
    with pytest.raises(ValueError, match="not among the tools"):
        model.stream("Hi", tools=TOOLS, tool_choice={"type": "function", "function": {"name": "nope"}})


def test_a_tool_loop_message_round_trip(templated_model: Any) -> None:
    """Answer.message() goes back into messages and renders; the next turn answers the tool result."""
    model = templated_model("qwen2_5")
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Oslo?"}]
    answer, _ = model.chat(messages=messages, tools=TOOLS, tool_choice="required", temperature=0,
                           max_new_tokens=120, logit_bias=no_optional_whitespace(model))
    messages.append(answer.message())
    messages += [{"role": "tool", "tool_call_id": c.id, "content": "sunny"} for c in answer.tool_calls]
    text = model.inputs.prompter.build(messages, max_prompt_tokens=4000, tools=TOOLS).text
    assert "<tool_call>" in text and "<tool_response>\nsunny\n</tool_response>" in text
    final, _ = model.chat(messages=messages, tools=TOOLS, temperature=0, max_new_tokens=5)
    assert final.finish_reason is not None
