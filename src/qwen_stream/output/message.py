"""One answer's text split into reasoning, content and tool calls as it streams (pure: text in, pieces out).

``MessageParser`` chains the two parsers the way the models write: Qwen3 reasons first inside ``<think>``, then
answers; tool-call markup is looked for in the answer only (a tag mentioned while thinking is just thought).
Which parsers a request gets follows its chat template: ``parser_for_template`` names the tool-call format a
template teaches the model, ``template_thinks`` says whether it knows ``<think>``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qwen_stream.output.reasoning import THINK_START, ReasoningParser
from qwen_stream.output.tool_calls import HermesToolParser, ToolCallParser
from qwen_stream.output.tool_calls_xml import Qwen3CoderToolParser
from qwen_stream.types import ToolCall, ToolCallDelta

__all__ = ["TOOL_PARSERS", "MessageParser", "ParsedDelta", "coalesce_tool_call_deltas", "make_tool_parser",
           "parser_for_template", "template_thinks"]

TOOL_PARSERS: dict[str, type[ToolCallParser]] = {
    HermesToolParser.name: HermesToolParser,
    Qwen3CoderToolParser.name: Qwen3CoderToolParser,
}


def parser_for_template(template: str | None) -> str | None:
    """The tool-call format a chat template teaches (a key of TOOL_PARSERS), or None: no tool support."""
    if not template:
        return None
    if "<function=" in template:
        return Qwen3CoderToolParser.name
    if "<tool_call>" in template:
        return HermesToolParser.name
    return None


def template_thinks(template: str | None) -> bool:
    """Whether a chat template knows Qwen3's ``<think>`` reasoning blocks."""
    return bool(template) and THINK_START in str(template)


def make_tool_parser(name: str, tools: Sequence[Mapping[str, Any]] | None = None, *,
                     max_calls: int | None = None) -> ToolCallParser:
    try:
        parser_class = TOOL_PARSERS[name]
    except KeyError:
        raise ValueError(f"unknown tool parser {name!r}; choose one of {sorted(TOOL_PARSERS)}") from None
    return parser_class(tools, max_calls=max_calls)


def coalesce_tool_call_deltas(deltas: Sequence[ToolCallDelta]) -> list[ToolCallDelta]:
    """Merge neighbouring pieces of the same call (a reader that lagged gets one piece per call)."""
    merged: list[ToolCallDelta] = []
    for delta in deltas:
        last = merged[-1] if merged else None
        if last is not None and last.index == delta.index and delta.id is None:
            merged[-1] = ToolCallDelta(last.index, last.id, last.name, last.arguments + delta.arguments)
        else:
            merged.append(delta)
    return merged


@dataclass(slots=True)
class ParsedDelta:
    """What one piece of streamed text turned into."""

    content: str = ""
    reasoning: str = ""
    tool_calls: list[ToolCallDelta] = field(default_factory=list)

    def extend(self, other: ParsedDelta) -> None:
        self.content += other.content
        self.reasoning += other.reasoning
        self.tool_calls += other.tool_calls


class MessageParser:
    """Reasoning first (if ``reasoning`` is given), then tool calls in the answer (if ``tools`` is given).

    ``push(text)`` / ``flush()`` return ParsedDelta; ``calls`` lists the tool calls so far.
    """

    def __init__(self, *, reasoning: ReasoningParser | None = None, tools: ToolCallParser | None = None) -> None:
        self._reasoning = reasoning
        self._tools = tools

    @property
    def calls(self) -> list[ToolCall]:
        return self._tools.calls if self._tools is not None else []

    def push(self, text: str) -> ParsedDelta:
        reasoning, content = self._reasoning.push(text) if self._reasoning is not None else ("", text)
        return self._answer(reasoning, content, final=False)

    def flush(self) -> ParsedDelta:
        reasoning, content = self._reasoning.flush() if self._reasoning is not None else ("", "")
        return self._answer(reasoning, content, final=True)

    def _answer(self, reasoning: str, content: str, *, final: bool) -> ParsedDelta:
        if self._tools is None:
            return ParsedDelta(content=content, reasoning=reasoning)
        text, calls = self._tools.push(content) if content else ("", [])
        if final:
            tail, more = self._tools.flush()
            text, calls = text + tail, calls + more
        return ParsedDelta(content=text, reasoning=reasoning, tool_calls=calls)
