"""Tools a chat request offers the model: OpenAI function specs and ``tool_choice``, checked before anything runs.

Everything here raises ValueError with a message naming the field, so the server can answer 400 and the Python
API fails at the call. The specs are handed to the chat template as given (``tools=``); the tool-call parser
chosen from the template reads the model's answer back (``qwen_stream.output.message``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["ToolRequest", "normalize_tool_calls", "validate_tool_choice", "validate_tools"]

_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
CHOICES = ("auto", "none", "required")


@dataclass(slots=True, frozen=True)
class ToolRequest:
    """The tools of one request and how the model may use them.

    ``choice`` is "auto", "none", "required" or the name of the one function it must call.
    ``parallel`` False keeps only the first call of an answer (``parallel_tool_calls=false``).
    """

    tools: tuple[dict[str, Any], ...]
    choice: str = "auto"
    parallel: bool = True
    forced_name: bool = False  # ``choice`` names a function (not one of CHOICES)

    @classmethod
    def create(cls, tools: Any, tool_choice: Any = None, parallel_tool_calls: bool | None = None) -> ToolRequest:
        specs = validate_tools(tools)
        choice, forced = validate_tool_choice(tool_choice, specs)
        return cls(tuple(specs), choice, parallel_tool_calls is not False, forced)

    @property
    def active(self) -> bool:
        """Whether the model is shown the tools and its answer is read for calls."""
        return bool(self.tools) and self.choice != "none"

    @property
    def must_call(self) -> bool:
        return self.active and (self.forced_name or self.choice == "required")

    def names(self) -> list[str]:
        return [spec["function"]["name"] for spec in self.tools]


def validate_tools(tools: Any) -> list[dict[str, Any]]:
    """OpenAI tool specs (``{"type": "function", "function": {...}}``; a bare function dict is wrapped)."""
    if tools is None:
        return []
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise ValueError("tools must be a list of {'type': 'function', 'function': {...}} objects")
    specs = [_tool_spec(tool, i) for i, tool in enumerate(tools)]
    names = [spec["function"]["name"] for spec in specs]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"tools: function names must be unique, repeated: {', '.join(duplicates)}")
    return specs


def _tool_spec(tool: Any, index: int) -> dict[str, Any]:
    where = f"tools[{index}]"
    if not isinstance(tool, Mapping):
        raise ValueError(f"{where} must be an object, got {type(tool).__name__}")
    if "function" not in tool and "name" in tool:  # a bare function spec, as Python callers write it
        tool = {"type": "function", "function": tool}
    if tool.get("type", "function") != "function":
        raise ValueError(f"{where}.type must be 'function', got {tool.get('type')!r}")
    function = tool.get("function")
    if not isinstance(function, Mapping):
        raise ValueError(f"{where}.function must be an object with a name")
    name = function.get("name")
    if not isinstance(name, str) or not _NAME.match(name):
        raise ValueError(f"{where}.function.name must be 1-64 letters, digits, '_', '.', ':' or '-', got {name!r}")
    description = function.get("description")
    if description is not None and not isinstance(description, str):
        raise ValueError(f"{where}.function.description must be a string")
    parameters = function.get("parameters")
    if parameters is not None:
        _check_parameters(parameters, f"{where}.function.parameters")
    return {"type": "function", "function": dict(function)}


def _check_parameters(parameters: Any, where: str) -> None:
    if not isinstance(parameters, Mapping):
        raise ValueError(f"{where} must be a JSON schema object, got {type(parameters).__name__}")
    if parameters.get("type", "object") != "object":
        raise ValueError(f"{where} must describe an object (type 'object'), got type {parameters.get('type')!r}")
    from jsonschema import Draft202012Validator
    from jsonschema.exceptions import SchemaError

    try:
        Draft202012Validator.check_schema(dict(parameters))
    except SchemaError as exc:
        path = "".join(f"[{p!r}]" for p in exc.path)
        raise ValueError(f"{where}{path} is not a valid JSON schema: {exc.message}") from None


def validate_tool_choice(choice: Any, specs: Sequence[Mapping[str, Any]]) -> tuple[str, bool]:
    """(choice, names a function); a named function must be one of the tools."""
    if choice is None:
        return "auto", False
    if isinstance(choice, str):
        if choice not in CHOICES:
            raise ValueError(f"tool_choice must be one of {', '.join(CHOICES)} or a function, got {choice!r}")
        if choice == "required" and not specs:
            raise ValueError("tool_choice is 'required' but no tools were given")
        return choice, False
    function = choice.get("function") if isinstance(choice, Mapping) else None
    name = function.get("name") if isinstance(function, Mapping) else None
    if not isinstance(name, str):
        raise ValueError("tool_choice must be a string or {'type': 'function', 'function': {'name': ...}}")
    known = [spec["function"]["name"] for spec in specs]
    if name not in known:
        raise ValueError(f"tool_choice names the function {name!r}, which is not among the tools "
                         f"({', '.join(known) or 'none given'})")
    return name, True


def normalize_tool_calls(calls: Any, where: str) -> list[dict[str, Any]]:
    """An assistant message's ``tool_calls`` for the template: ``arguments`` parsed from JSON text into an
    object, as Qwen's templates expect (they write it with ``tojson``; a string would be quoted twice)."""
    if isinstance(calls, (str, bytes, Mapping)) or not isinstance(calls, Sequence):
        raise ValueError(f"{where} must be a list of tool calls")
    normalized = []
    for i, call in enumerate(calls):
        function = call.get("function") if isinstance(call, Mapping) else None
        if not isinstance(function, Mapping) or not isinstance(function.get("name"), str):
            raise ValueError(f"{where}[{i}] must be {{'type': 'function', 'function': {{'name': ..., "
                             f"'arguments': ...}}}}")
        arguments = function.get("arguments", {})
        if isinstance(arguments, str):
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except ValueError as exc:
                raise ValueError(f"{where}[{i}].function.arguments is not valid JSON: {exc}") from None
        if not isinstance(arguments, Mapping):
            raise ValueError(f"{where}[{i}].function.arguments must be a JSON object")
        entry: dict[str, Any] = {"type": "function", "function": {"name": function["name"],
                                                                   "arguments": dict(arguments)}}
        if isinstance(call.get("id"), str):
            entry["id"] = call["id"]
        normalized.append(entry)
    return normalized
