"""Tool calls parsed out of streamed text, incrementally: the shared machinery and the Hermes format.

Qwen2.5 and Qwen3 write a call as ``<tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>``. The parser
passes text outside the tags through as content, holding back only a tail that could still become
``<tool_call>``. Inside a call it announces the name as soon as it is complete, then streams the arguments
object exactly as the model writes it, so the fragments join to the final ``arguments`` text. A call whose
markup cannot be read (no name by its end) is given back as content rather than lost.

Small Qwen2.5-Coder models often skip the tags and answer with the bare call, ``{"name": ..., "arguments": ...}``
or the same inside a ```` ```json ```` fence. The Hermes parser reads that too when it is the whole answer and names
one of the request's tools: an answer that starts like that is held back until it ends (it may be a plain JSON
answer after all, then it is content), so such a call arrives whole in one piece.

Qwen2.5's chat template shows the model its call format as ``{{"name": <function-name>, ...}}`` (doubled braces
inside a Jinja string literal are not Jinja syntax, so they reach the model as written; inputs/template_fixes.py
corrects the text), and Qwen2.5-Coder copies it, mostly after a tool result: ``{{"name": "f", "arguments":
{...}}}``, with or without the tags. Inside the tags such a call is read whole when it closes (its arguments, if
doubled too, would not stream as JSON); without them it is a bare call, read by the bare call's rules.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from qwen_stream.output.tags import split_at_tag
from qwen_stream.types import ToolCall, ToolCallDelta

__all__ = ["HermesToolParser", "ToolCallParser", "load_call_json", "new_call_id"]

# The start of an answer that may be a bare call: optional ```json fence, then an object (or a list of them).
_BARE_START = re.compile(r"(?:```(?:json)?\s*)?\[?\s*\{")
_BARE_MAYBE = re.compile(r"`{0,3}|```j|```js|```jso|```json|(?:```(?:json)?\s*)?\[?\s*")
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.S)


def new_call_id() -> str:
    return f"call_{secrets.token_hex(12)}"


@dataclass(slots=True)
class _Call:
    index: int
    id: str
    name: str | None = None
    fragments: list[str] = field(default_factory=list)
    ignored: bool = False  # past max_calls: read to its end, never reported


class ToolCallParser:
    """Splits streamed answer text into (content, tool-call deltas); make one per answer.

    ``push(text)`` returns the content and the ``ToolCallDelta``s that ``text`` completes; ``flush()`` at the
    end releases what was held back and finishes a call left open. ``calls`` lists the calls so far.
    ``tools`` (OpenAI tool specs) lets a format type its parameters; ``max_calls`` (1 for
    ``parallel_tool_calls=false``) drops calls after that many. Subclasses read one call's body.
    """

    name: ClassVar[str] = ""
    OPEN: ClassVar[str] = "<tool_call>"
    CLOSE: ClassVar[str] = "</tool_call>"
    BARE_JSON: ClassVar[bool] = False  # also read a whole answer that is a bare JSON call (Hermes)

    def __init__(self, tools: Sequence[Mapping[str, Any]] | None = None, *, max_calls: int | None = None) -> None:
        self._schemas = _parameter_schemas(tools or ())
        self._max_calls = max_calls
        self._held = ""
        self._body = ""  # the open call's text so far
        self._current: _Call | None = None
        self._calls: list[_Call] = []
        self._after_call = False  # whitespace right after a call is not content
        # None: the answer's start is still undecided; True: it may be a bare call, held to the end.
        self._bare: bool | None = None if self.BARE_JSON and self._schemas else False

    @property
    def calls(self) -> list[ToolCall]:
        return [ToolCall(c.id, c.name, "".join(c.fragments)) for c in self._calls if c.name is not None]

    def push(self, text: str) -> tuple[str, list[ToolCallDelta]]:
        pending, self._held = self._held + text, ""
        content: list[str] = []
        deltas: list[ToolCallDelta] = []
        if self._bare is not False and not self._bare_start(pending):
            return "", deltas
        while pending:
            if self._current is None:
                pending = self._text_step(pending, content)
            else:
                pending = self._call_step(pending, content, deltas)
        return "".join(content), deltas

    def flush(self) -> tuple[str, list[ToolCallDelta]]:
        held, self._held = self._held, ""
        content: list[str] = []
        deltas: list[ToolCallDelta] = []
        if self._bare is not False:
            self._bare = False
            if not self._bare_calls(held, deltas):
                content.append(held)
        elif self._current is not None:
            self._body += held
            self._end_call(content, deltas, closed=False)
        else:
            self._say(held, content)
        return "".join(content), deltas

    # ---- a bare call as the whole answer --------------------------------------------------------------------

    def _bare_start(self, pending: str) -> bool:
        """Whether to go on parsing normally; False: ``pending`` is held (undecided, or a bare call)."""
        start = pending.lstrip()
        if self._bare or (start and _BARE_START.match(start)):
            self._bare = True
        elif not start or _BARE_MAYBE.fullmatch(start):
            pass  # could still become a fence or an object
        else:
            self._bare = False
            return True
        self._held = pending
        return False

    def _bare_calls(self, text: str, deltas: list[ToolCallDelta]) -> bool:
        """Report ``text`` as calls if it is one call object (or a list of them) naming the request's tools."""
        body = text.strip()
        fenced = _FENCE.match(body)
        value = load_call_json(fenced.group(1) if fenced else body)
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(i, dict) and i.get("name") in self._schemas for i in items):
            return False
        for item in items[: self._max_calls or len(items)]:
            self._current = _Call(index=len(self._calls), id=new_call_id())
            self._announce(item["name"], deltas)
            self._arguments(_arguments_text(item.get("arguments", item.get("parameters"))), deltas)
            self._calls.append(self._current)
        self._current = None
        return True

    # ---- text outside calls ------------------------------------------------------------------------------------

    def _text_step(self, pending: str, content: list[str]) -> str:
        before, tag, after = split_at_tag(pending, self.OPEN)
        self._say(before, content)
        if tag is None:
            self._held = after
            return ""
        full = self._max_calls is not None and len(self.calls) >= self._max_calls
        self._current = _Call(index=len(self._calls), id=new_call_id(), ignored=full)
        self._body = ""
        self._begin()
        return after

    def _say(self, text: str, content: list[str]) -> None:
        if self._after_call:
            text = text.lstrip()
            self._after_call = not text
        if text:
            content.append(text)

    # ---- inside a call -----------------------------------------------------------------------------------------

    def _call_step(self, pending: str, content: list[str], deltas: list[ToolCallDelta]) -> str:
        before, tag, after = split_at_tag(pending, self.CLOSE)
        self._body += before
        if tag is None:
            self._held = after
            if not self._current_ignored():
                self._advance(self._body, deltas)
            return ""
        self._end_call(content, deltas, closed=True)
        return after

    def _current_ignored(self) -> bool:
        return self._current is None or self._current.ignored

    def _end_call(self, content: list[str], deltas: list[ToolCallDelta], *, closed: bool) -> None:
        call, body = self._current, self._body
        self._current, self._body = None, ""
        if call is None:
            return
        if call.ignored:
            self._after_call = True
            return
        self._current = call  # the hooks below announce and add arguments to it
        self._advance(body, deltas)
        understood = self._finish(body, deltas)
        self._current = None
        if understood and call.name is not None:
            self._calls.append(call)
            self._after_call = True
        else:  # unreadable markup: the model's text is given back rather than lost
            self._say(self.OPEN + body + (self.CLOSE if closed else ""), content)

    def _announce(self, name: str, deltas: list[ToolCallDelta]) -> None:
        call = self._current
        if call is not None and call.name is None:
            call.name = name
            deltas.append(ToolCallDelta(index=call.index, id=call.id, name=name))

    def _arguments(self, text: str, deltas: list[ToolCallDelta]) -> None:
        call = self._current
        if call is None or call.name is None or not text:
            return
        call.fragments.append(text)
        last = deltas[-1] if deltas else None
        if last is not None and last.index == call.index:  # one delta per call per push
            deltas[-1] = ToolCallDelta(last.index, last.id, last.name, last.arguments + text)
        else:
            deltas.append(ToolCallDelta(index=call.index, arguments=text))

    def _has_arguments(self) -> bool:
        return self._current is not None and bool(self._current.fragments)

    def parameter_schema(self, function: str, parameter: str) -> Mapping[str, Any] | None:
        """The JSON schema of one parameter of one of the request's tools, if it was given."""
        return self._schemas.get(function, {}).get(parameter)

    # ---- format hooks ------------------------------------------------------------------------------------------

    def _begin(self) -> None:
        """A call opened: reset the per-call reading state."""

    def _advance(self, body: str, deltas: list[ToolCallDelta]) -> None:
        """Announce the name and stream arguments as far as ``body`` (the call so far) allows."""

    def _finish(self, body: str, deltas: list[ToolCallDelta]) -> bool:
        """The call ended (``body`` is all of it): complete its arguments; False if it was unreadable."""
        return False


def _parameter_schemas(tools: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    schemas: dict[str, dict[str, Any]] = {}
    for tool in tools:
        function = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            continue
        parameters = function.get("parameters")
        properties = parameters.get("properties") if isinstance(parameters, Mapping) else None
        schemas[function["name"]] = dict(properties) if isinstance(properties, Mapping) else {}
    return schemas


# ---------------------------------------------------------------------------------------------------------------
# Hermes: <tool_call>{"name": ..., "arguments": {...}}</tool_call>

_NAME = re.compile(r'"name"\s*:\s*"((?:[^"\\]|\\.)*)"')
_ARGUMENTS = re.compile(r'"(?:arguments|parameters)"\s*:\s*')


class _ObjectScanner:
    """Finds where a JSON object written incrementally ends: brace depth outside strings."""

    __slots__ = ("depth", "done", "escaped", "in_string")

    def __init__(self) -> None:
        self.depth = 0
        self.in_string = False
        self.escaped = False
        self.done = False

    def feed(self, text: str, start: int) -> int:
        """Scan ``text[start:]``; return the index just past the object's closing brace, or len(text)."""
        for i in range(start, len(text)):
            ch = text[i]
            if self.in_string:
                if self.escaped:
                    self.escaped = False
                elif ch == "\\":
                    self.escaped = True
                elif ch == '"':
                    self.in_string = False
            elif ch == '"':
                self.in_string = True
            elif ch in "{[":
                self.depth += 1
            elif ch in "}]":
                self.depth -= 1
                if self.depth == 0:
                    self.done = True
                    return i + 1
        return len(text)


class HermesToolParser(ToolCallParser):
    """Qwen2.5 / Qwen3 (Hermes) tool calls: a JSON object with ``name`` and ``arguments`` per ``<tool_call>``.

    The arguments object is streamed as written; when the model writes ``arguments`` before ``name``, or as
    something other than an object, the call is reported whole when it closes (arguments re-serialized).
    """

    name = "hermes"
    BARE_JSON = True

    def _begin(self) -> None:
        self._deferred = False  # read the call whole at its end
        self._name_end = 0
        self._scan_at: int | None = None
        self._scanner = _ObjectScanner()

    def _advance(self, body: str, deltas: list[ToolCallDelta]) -> None:
        call = self._current
        if call is None or self._deferred:
            return
        start = body.lstrip()
        if start.startswith("{{"):  # the template's doubled braces: its arguments cannot stream as JSON
            self._deferred = True
            return
        if call.name is None:
            arguments = _ARGUMENTS.search(body)
            match = _NAME.search(body, 0, arguments.start() if arguments else len(body))
            if match is None:
                self._deferred = arguments is not None
                return
            self._announce(_json_string(match.group(1)), deltas)
            self._name_end = match.end()
        if self._scan_at is None and not self._start_arguments(body):
            return
        if self._scan_at is not None and not self._scanner.done:
            end = self._scanner.feed(body, self._scan_at)
            self._arguments(body[self._scan_at:end], deltas)
            self._scan_at = end

    def _start_arguments(self, body: str) -> bool:
        match = _ARGUMENTS.search(body, self._name_end)
        if match is None or match.end() >= len(body):
            return False
        if body[match.end()] != "{":
            self._deferred = True
            return False
        self._scan_at = match.end()
        return True

    def _finish(self, body: str, deltas: list[ToolCallDelta]) -> bool:
        whole = load_call_json(body.strip())
        call = self._current
        if isinstance(whole, dict) and isinstance(whole.get("name"), str) and call is not None:
            self._announce(whole["name"], deltas)
            if not self._has_arguments():
                value = whole.get("arguments", whole.get("parameters"))
                self._arguments(_arguments_text(value), deltas)
            return True
        if call is not None and call.name is not None:  # cut short (max tokens): keep what was written
            if not self._has_arguments():
                self._arguments("{}", deltas)
            return True
        return False


def load_call_json(text: str) -> Any:
    """The JSON value of a call's text, also when written in the doubled braces of Qwen2.5's template; None if
    neither reading is JSON. ``{{...}}`` is tried as one outer pair doubled (``{{"name": "f", "arguments":
    {"a": 1}}}``), then as every brace doubled (``{{"name": "f", "arguments": {{"a": 1}}}}``)."""
    candidates = [text]
    if text.startswith("{{") and text.endswith("}}"):
        candidates += [text[1:-1], text.replace("{{", "{").replace("}}", "}")]
    for candidate in candidates:
        try:
            return json.loads(candidate)
        except ValueError:
            continue
    return None


def _json_string(escaped: str) -> str:
    try:
        value = json.loads(f'"{escaped}"')
    except ValueError:
        return escaped
    return value if isinstance(value, str) else escaped


def _arguments_text(value: Any) -> str:
    """Arguments written whole: an object as JSON; a string that holds an object as that object; else {}."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return "{}"
    return json.dumps(value, ensure_ascii=False) if isinstance(value, dict) else "{}"
