"""Reasoning and tool-call parsers, fed the same answers in every possible split (no model)."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from qwen_stream.output.message import (
    MessageParser,
    ParsedDelta,
    coalesce_tool_call_deltas,
    make_tool_parser,
    parser_for_template,
    template_thinks,
)
from qwen_stream.output.reasoning import ReasoningParser, prompt_opens_reasoning
from qwen_stream.output.tags import tag_prefix_length

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"},
                                                    "metric": {"type": "boolean"}, "where": {"type": "object"}},
                   "required": ["city"]}}}]

HERMES = ('Let me check.\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pâris 🌧", '
          '"where": {"q": "}{\\"</tool_call"}}}\n</tool_call>\n<tool_call>\n{"name": "now", "arguments": {}}\n'
          '</tool_call>')
XML = ("I will look.\n<tool_call>\n<function=get_weather>\n<parameter=city>\nSão Paulo\n</parameter>\n"
       "<parameter=days>\n3\n</parameter>\n<parameter=metric>\ntrue\n</parameter>\n</function>\n</tool_call>\n"
       "<tool_call>\n<function=now>\n</function>\n</tool_call>")
THINKING = "<think>\nThe user wants weather.\n</think>\n\nCalling.\n<tool_call>\n" \
           '{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call>'

Factory = Callable[[], MessageParser]


def _hermes() -> MessageParser:
    return MessageParser(tools=make_tool_parser("hermes", TOOLS))


def _xml() -> MessageParser:
    return MessageParser(tools=make_tool_parser("qwen3_coder", TOOLS))


def _thinking() -> MessageParser:
    return MessageParser(reasoning=ReasoningParser(), tools=make_tool_parser("hermes", TOOLS))


def run(factory: Factory, pieces: list[str]) -> tuple[ParsedDelta, MessageParser]:
    parser = factory()
    total = ParsedDelta()
    for piece in pieces:
        total.extend(parser.push(piece))
    total.extend(parser.flush())
    return total, parser


def check_deltas(total: ParsedDelta, parser: MessageParser) -> None:
    """First piece of a call names it; the argument fragments join to the final arguments exactly."""
    calls = parser.calls
    seen: set[int] = set()
    joined = [""] * len(calls)
    for delta in total.tool_calls:
        if delta.index not in seen:
            assert delta.id == calls[delta.index].id and delta.name == calls[delta.index].name
            seen.add(delta.index)
        else:
            assert delta.id is None and delta.name is None
        joined[delta.index] += delta.arguments
    assert joined == [c.arguments for c in calls]
    for call in calls:
        json.loads(call.arguments)


def splits(text: str) -> list[list[str]]:
    """The text whole, in two pieces at every point, in three pieces around every point, one char at a time."""
    ways = [[text], list(text)]
    ways += [[text[:i], text[i:]] for i in range(1, len(text))]
    ways += [[text[:i], text[i:i + 3], text[i + 3:]] for i in range(1, len(text) - 3)]
    return ways


@pytest.mark.parametrize(("factory", "text", "content", "reasoning", "calls"), [
    (_hermes, HERMES, "Let me check.\n", "",
     [("get_weather", {"city": "Pâris 🌧", "where": {"q": '}{"</tool_call'}}), ("now", {})]),
    (_xml, XML, "I will look.\n", "",
     [("get_weather", {"city": "São Paulo", "days": 3, "metric": True}), ("now", {})]),
    (_thinking, THINKING, "Calling.\n", "The user wants weather.", [("get_weather", {"city": "Oslo"})]),
])
def test_every_split_gives_the_same_message(factory: Factory, text: str, content: str, reasoning: str,
                                            calls: list[tuple[str, dict[str, object]]]) -> None:
    for pieces in splits(text):
        total, parser = run(factory, pieces)
        assert total.content == content, pieces
        assert total.reasoning == reasoning, pieces
        assert [(c.name, json.loads(c.arguments)) for c in parser.calls] == calls, pieces
        check_deltas(total, parser)
        assert "<tool_call" not in total.content and "<think" not in total.reasoning


def test_hermes_arguments_stream_before_the_call_closes() -> None:
    parser = make_tool_parser("hermes", TOOLS)
    content, deltas = parser.push('<tool_call>\n{"name": "get_weather", "arguments": {"city": "Pa')
    assert content == "" and deltas[0].name == "get_weather" and deltas[0].arguments == '{"city": "Pa'
    _, deltas = parser.push('ris"}}\n</tool_call>')
    assert [d.arguments for d in deltas] == ['ris"}']
    assert parser.calls[0].arguments == '{"city": "Paris"}'


def test_text_that_only_looks_like_a_tag_is_content() -> None:
    for text in ["a < b and <tool_cal> too", "<tool", "x <tool_call"]:
        total, parser = run(_hermes, list(text))
        assert total.content == text and parser.calls == []


def test_unreadable_call_is_given_back_as_content() -> None:
    text = "<tool_call>\nnot json at all\n</tool_call>"
    for pieces in splits(text):
        total, parser = run(_hermes, pieces)
        assert total.content == text and parser.calls == []


def test_call_cut_short_keeps_its_name_and_what_was_written() -> None:
    _, parser = run(_hermes, ['<tool_call>\n{"name": "get_weather", "arguments": {"ci'])
    assert parser.calls[0].name == "get_weather" and parser.calls[0].arguments == '{"ci'
    _, parser = run(_xml, ["<tool_call>\n<function=get_weather>\n<parameter=city>\nPar"])
    assert parser.calls[0].arguments == "{}"  # a half-written parameter is not reported


def test_arguments_before_name_and_string_arguments() -> None:
    total, parser = run(_hermes, ['<tool_call>{"arguments": {"city": "Rome"}, "name": "get_weather"}</tool_call>'])
    assert [(c.name, c.arguments) for c in parser.calls] == [("get_weather", '{"city": "Rome"}')]
    total, parser = run(_hermes, ['<tool_call>{"name": "get_weather", "arguments": "{\\"city\\": \\"Rome\\"}"}'
                                  '</tool_call>'])
    assert json.loads(parser.calls[0].arguments) == {"city": "Rome"}
    check_deltas(total, parser)


def test_max_calls_drops_later_calls() -> None:
    parser = MessageParser(tools=make_tool_parser("hermes", TOOLS, max_calls=1))
    total = parser.push(HERMES)
    total.extend(parser.flush())
    assert [c.name for c in parser.calls] == ["get_weather"] and total.content == "Let me check.\n"


def test_xml_values_follow_the_schema() -> None:
    text = ("<tool_call><function=get_weather><parameter=city>\n42\n</parameter><parameter=days>seven"
            "</parameter><parameter=where>\n{\"a\": 1}\n</parameter><parameter=extra>1</parameter></function>"
            "</tool_call>")
    _, parser = run(_xml, [text])
    assert json.loads(parser.calls[0].arguments) == {"city": "42", "days": "seven", "where": {"a": 1}, "extra": "1"}


def test_reasoning_when_the_prompt_opened_it() -> None:
    text = "Thinking here\n</think>\n\nThe answer."
    for pieces in splits(text):
        parser = ReasoningParser(starts_in_reasoning=True)
        parts = [parser.push(p) for p in pieces] + [parser.flush()]
        assert "".join(r for r, _ in parts) == "Thinking here"
        assert "".join(c for _, c in parts) == "The answer."


def test_reasoning_only_at_the_start_and_unclosed_blocks() -> None:
    parser = ReasoningParser()
    assert parser.push("Hi <think>x</think>") == ("", "Hi <think>x</think>")
    parser = ReasoningParser()
    parts = [parser.push("  <think>\nstill going"), parser.flush()]
    assert "".join(r for r, _ in parts) == "still going" and all(c == "" for _, c in parts)
    parser = ReasoningParser()  # a Qwen3 answer with thinking off: the empty block is in the prompt, not here
    assert parser.push("\n\nPlain answer") == ("", "\n\nPlain answer")


def test_prompt_and_template_detection() -> None:
    assert prompt_opens_reasoning("<|im_start|>assistant\n<think>\n")
    assert not prompt_opens_reasoning("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    assert parser_for_template("... <function=example> ... <tool_call>") == "qwen3_coder"
    assert parser_for_template("... <tool_call> ...") == "hermes"
    assert parser_for_template("{{ messages }}") is None and parser_for_template(None) is None
    assert template_thinks("<think>") and not template_thinks("plain")
    with pytest.raises(ValueError, match="unknown tool parser"):
        make_tool_parser("nope")


def test_tag_prefix_length() -> None:
    assert tag_prefix_length("abc<tool_", ["<tool_call>"]) == 6
    assert tag_prefix_length("abc<tool_call>", ["<tool_call>"]) == 0  # whole tags are found, not held
    assert tag_prefix_length("abc", ["<tool_call>"]) == 0


def test_coalesce_merges_pieces_of_one_call() -> None:
    total, _ = run(_hermes, list(HERMES))
    merged = coalesce_tool_call_deltas(total.tool_calls)
    assert [(d.index, d.name) for d in merged] == [(0, "get_weather"), (1, "now")]


BARE = '```json\n{\n  "name": "get_weather",\n  "arguments": {\n    "city": "Paris"\n  }\n}\n```'


def test_a_bare_call_as_the_whole_answer_is_a_call() -> None:
    """Qwen2.5-Coder-1.5B answers a tool request with a fenced JSON call and no tags."""
    for text in (BARE, '  {"name": "get_weather", "arguments": {"city": "Paris"}}',
                 '[{"name": "get_weather", "arguments": {"city": "Paris"}}]'):
        for pieces in splits(text):
            total, parser = run(_hermes, pieces)
            assert total.content == "" and [(c.name, json.loads(c.arguments)) for c in parser.calls] == [
                ("get_weather", {"city": "Paris"})], pieces
            check_deltas(total, parser)


def test_json_or_code_that_is_not_a_call_stays_content() -> None:
    for text in ('{"name": "someone else", "arguments": {}}', '```json\n{"a": 1}\n```', "```python\nx = {}\n```",
                 '{"name": "get_weather"} and more'):
        total, parser = run(_hermes, list(text))
        assert total.content == text and parser.calls == []
    parser = make_tool_parser("hermes", TOOLS)  # code streams at once: only a JSON start is held back
    assert parser.push("```python\nprint(1)")[0] == "```python\nprint(1)"
    parser = make_tool_parser("hermes")  # without tool schemas nothing can be matched: no holding back
    assert parser.push('{"name": "get_weather"')[0] == '{"name": "get_weather"'


# What Qwen2.5-Coder-1.5B writes after a tool result when its template shows the call format in doubled braces
# ({{"name": <function-name>, ...}}, tests/fixtures/chat_templates/qwen2_5.jinja): the example copied as written.
DOUBLED = [
    '{{"name": "get_weather", "arguments": {"city": "Paris"}}}',  # the outer pair doubled
    '{{"name": "get_weather", "arguments": {{"city": "Paris"}}}}',  # every brace doubled
    '```json\n{{"name": "get_weather", "arguments": {"city": "Paris"}}}\n```',
    '<tool_call>\n{{"name": "get_weather", "arguments": {"city": "Paris"}}}\n</tool_call>',
    '<tool_call>\n{{"name": "get_weather", "arguments": {{"city": "Paris"}}}}\n</tool_call>',
]


@pytest.mark.parametrize("text", DOUBLED)
def test_a_call_in_the_templates_doubled_braces_is_a_call(text: str) -> None:
    for pieces in splits(text):
        total, parser = run(_hermes, pieces)
        assert total.content == "", pieces
        assert [(c.name, json.loads(c.arguments)) for c in parser.calls] == [("get_weather", {"city": "Paris"})]
        check_deltas(total, parser)


def test_doubled_braces_that_are_not_a_call_stay_content() -> None:
    for text in ('{{"name": "someone else", "arguments": {}}}', "{{ jinja }}", '{{"city": "Paris"}}'):
        total, parser = run(_hermes, list(text))
        assert total.content == text and parser.calls == []
