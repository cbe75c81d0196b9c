"""Qwen3-Coder's XML tool calls, parsed incrementally into OpenAI tool-call deltas.

The model writes::

    <tool_call>
    <function=get_weather>
    <parameter=city>
    Paris
    </parameter>
    </function>
    </tool_call>

Parameter values are raw text; they become JSON values by the type the request's tool schema gives them
(``integer``, ``number``, ``boolean``, ``object``/``array``, else a string), as Qwen's own parser does. The
arguments JSON is built as each parameter completes: ``{"city": "Paris"`` then ``}`` at ``</function>``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from qwen_stream.output.tool_calls import ToolCallParser
from qwen_stream.types import ToolCallDelta

__all__ = ["Qwen3CoderToolParser"]

_FUNCTION = re.compile(r"\s*<function=([^>\n]+)>")
_PARAMETER = re.compile(r"\s*<parameter=([^>\n]+)>")
_FUNCTION_END = re.compile(r"\s*</function>")
_PARAMETER_END = "</parameter>"
_VALUE_ENDS = (_PARAMETER_END, "<parameter=", "</function>")


class Qwen3CoderToolParser(ToolCallParser):
    """``<tool_call><function=NAME><parameter=P>value</parameter>...</function></tool_call>``."""

    name = "qwen3_coder"

    def _begin(self) -> None:
        self._at = 0  # how far the call's body has been read
        self._params = 0
        self._closed = False  # </function> seen: the arguments object is complete
        self._searched = 0  # no value terminator starts before this index: long values are scanned once

    def _advance(self, body: str, deltas: list[ToolCallDelta]) -> None:
        call = self._current
        if call is None or self._closed:
            return
        if call.name is None:
            match = _FUNCTION.match(body, self._at)
            if match is None:
                return
            self._announce(match.group(1).strip(), deltas)
            self._at = match.end()
        while not self._closed and self._read_one(body, deltas):
            pass

    def _read_one(self, body: str, deltas: list[ToolCallDelta]) -> bool:
        """Read one whole parameter or the closing tag at the cursor; False if it has not fully arrived."""
        end = _FUNCTION_END.match(body, self._at)
        if end is not None:
            self._close_arguments(deltas)
            self._at = end.end()
            return True
        match = _PARAMETER.match(body, self._at)
        if match is None:
            return False
        value_end, terminator = _first_of(body, _VALUE_ENDS, max(match.end(), self._searched))
        if terminator is None:
            self._searched = max(match.end(), len(body) - max(len(end) for end in _VALUE_ENDS))
            return False
        self._add_parameter(match.group(1).strip(), body[match.end():value_end], deltas)
        self._at = value_end + (len(terminator) if terminator == _PARAMETER_END else 0)
        self._searched = self._at
        return True

    def _add_parameter(self, name: str, raw: str, deltas: list[ToolCallDelta]) -> None:
        call = self._current
        if call is None or call.name is None:
            return
        value = _typed(_strip_one_newline(raw), self.parameter_schema(call.name, name))
        prefix = "{" if self._params == 0 else ", "
        self._params += 1
        self._arguments(f"{prefix}{json.dumps(name, ensure_ascii=False)}: {json.dumps(value, ensure_ascii=False)}",
                        deltas)

    def _close_arguments(self, deltas: list[ToolCallDelta]) -> None:
        self._closed = True
        self._arguments("}" if self._params else "{}", deltas)

    def _finish(self, body: str, deltas: list[ToolCallDelta]) -> bool:
        call = self._current
        if call is None or call.name is None:
            return False
        if not self._closed:  # no </function> (or cut short): close what was read
            self._close_arguments(deltas)
        return True


def _first_of(text: str, needles: tuple[str, ...], start: int) -> tuple[int, str | None]:
    best, found = len(text), None
    for needle in needles:
        at = text.find(needle, start)
        if at != -1 and at < best:
            best, found = at, needle
    return best, found


def _strip_one_newline(value: str) -> str:
    if value.startswith("\n"):
        value = value[1:]
    if value.endswith("\n"):
        value = value[:-1]
    return value


def _typed(raw: str, schema: Mapping[str, Any] | None) -> Any:
    """The parameter's value as its schema types it; a string when the schema says so or says nothing."""
    kinds = _schema_types(schema)
    if not kinds or "string" in kinds:
        return raw
    text = raw.strip()
    if kinds & {"integer", "number"}:
        for convert in (int, float):
            try:
                return convert(text)
            except ValueError:
                continue
        return raw
    if "boolean" in kinds and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if "null" in kinds and text.lower() in ("null", "none"):
        return None
    try:
        return json.loads(text)
    except ValueError:
        return raw


def _schema_types(schema: Mapping[str, Any] | None) -> set[str]:
    if not isinstance(schema, Mapping):
        return set()
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list):
            return set().union(*(_schema_types(o) for o in options if isinstance(o, Mapping)))
    return set()
