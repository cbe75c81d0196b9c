"""What an answer must match, in one neutral value whatever the request called it: a JSON schema, any JSON object,
a regular expression, one of several strings, or a grammar (GBNF / EBNF, as llama.cpp writes it).

Every protocol names its format its own way (OpenAI's ``response_format``, llama-server's ``grammar`` and
``json_schema``, vLLM's ``structured_outputs`` and ``guided_*``, Anthropic's ``output_config.format``, Ollama's
``format``); each maps its field to an ``OutputFormat`` that remembers that field's name, so a format that does not
compile is a 400 naming the field the client sent. ``Grammars.compile`` (inputs/grammars.py) turns it into the
constraint the engine masks logits with. Pure data and checks: no grammar library here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from qwen_stream.errors import GrammarError, InvalidParameterError

FormatKind = Literal["json_schema", "json_object", "regex", "choice", "grammar"]


@dataclass(slots=True, frozen=True)
class OutputFormat:
    kind: FormatKind
    source: Any  # the schema (object or its JSON text), the regex, the choices (tuple of str), the grammar text
    field: str  # the request field that asked for it (the 400's ``param``)

    @classmethod
    def json_schema(cls, schema: Any, field: str = "json_schema") -> OutputFormat:
        if isinstance(schema, Mapping) and not schema:
            return cls("json_object", None, field)  # llama.cpp: ``{}`` is any JSON (an object, here)
        if not isinstance(schema, Mapping | str | bool):
            raise GrammarError(f"{field}: a JSON schema must be an object, got {type(schema).__name__}", param=field)
        return cls("json_schema", schema, field)

    @classmethod
    def json_object(cls, field: str = "response_format") -> OutputFormat:
        return cls("json_object", None, field)

    @classmethod
    def regex(cls, pattern: Any, field: str = "regex") -> OutputFormat:
        if not isinstance(pattern, str) or not pattern:
            raise GrammarError(f"{field}: a regular expression must be a non-empty string", param=field)
        return cls("regex", pattern, field)

    @classmethod
    def choice(cls, choices: Any, field: str = "choice") -> OutputFormat:
        if isinstance(choices, str) or not isinstance(choices, Sequence) or not choices \
                or not all(isinstance(c, str) for c in choices):
            raise GrammarError(f"{field}: give a non-empty list of strings", param=field)
        return cls("choice", tuple(dict.fromkeys(choices)), field)

    @classmethod
    def grammar(cls, text: Any, field: str = "grammar") -> OutputFormat:
        if not isinstance(text, str) or not text.strip():
            raise GrammarError(f"{field}: a grammar must be non-empty GBNF text (root ::= ...)", param=field)
        return cls("grammar", text, field)

    @property
    def ebnf(self) -> str:
        """A choice as a grammar: ``root ::= "a" | "b"`` (JSON string escapes are the grammar's too)."""
        if self.kind != "choice":
            raise ValueError(f"only a choice is written as a grammar here, not a {self.kind}")
        return "root ::= " + " | ".join(json.dumps(c, ensure_ascii=False) for c in self.source)

    @property
    def key(self) -> str:
        """What identifies the compiled grammar (the cache key): the kind and the source, not the field."""
        source = self.source if isinstance(self.source, str) else json.dumps(self.source, ensure_ascii=False)
        return f"{self.kind}:{source}"


def response_format(value: Any, field: str = "response_format") -> OutputFormat | None:
    """OpenAI's ``response_format`` (``text``, ``json_object``, ``json_schema`` with ``json_schema.schema``), and
    llama-server's forms of it: ``{"type": "json_object", "schema": {...}}`` and ``{"type": "json_schema",
    "schema": {...}}``. None or ``{"type": "text"}``: no format."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise GrammarError(f'{field} must be an object such as {{"type": "json_object"}}', param=field)
    kind = value.get("type")
    if kind == "text":
        return None
    if kind not in ("json_object", "json_schema"):
        raise GrammarError(f"{field}.type must be text, json_object or json_schema, got {kind!r}", param=field)
    if "schema" in value:  # llama-server's shape: the schema beside the type
        return OutputFormat.json_schema(value["schema"], f"{field}.schema")
    if kind == "json_object":
        return OutputFormat.json_object(field)
    spec = value.get("json_schema")
    if not isinstance(spec, Mapping) or "schema" not in spec:
        raise GrammarError(f'{field}: a json_schema format needs {{"json_schema": {{"name": ..., "schema": {{...}}}}}}',
                           param=field)
    return OutputFormat.json_schema(spec["schema"], f"{field}.json_schema.schema")


# vLLM's structured-output keys, and the kind each asks for.
_VLLM_KINDS = {"json": "json_schema", "regex": "regex", "choice": "choice", "grammar": "grammar"}
# vLLM options that tune how a format is followed, not what it allows: read and left alone.
VLLM_HARMLESS_OPTIONS = frozenset({"backend", "disable_fallback", "disable_any_whitespace",
                                   "disable_additional_properties", "whitespace_pattern"})


def structured_outputs(value: Any, field: str = "structured_outputs") -> OutputFormat | None:
    """vLLM's ``structured_outputs``: one of ``json`` (a schema), ``regex``, ``choice``, ``grammar`` or
    ``json_object: true``; ``structural_tag`` and unknown keys are refused by name."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise GrammarError(f"{field} must be an object such as {{\"regex\": \"...\"}}", param=field)
    formats: list[OutputFormat | None] = []
    for key, option in value.items():
        if option is None or key in VLLM_HARMLESS_OPTIONS:
            continue
        if key in _VLLM_KINDS:
            formats.append(_vllm_format(_VLLM_KINDS[key], option, f"{field}.{key}"))
        elif key == "json_object":
            formats.append(OutputFormat.json_object(f"{field}.json_object") if option else None)
        else:
            raise GrammarError(f"{field}.{key} is not supported (supported: json, regex, choice, grammar, "
                               f"json_object)", param=f"{field}.{key}")
    return one_format(formats)


def guided_fields(values: Mapping[str, Any]) -> OutputFormat | None:
    """vLLM's older ``guided_json`` / ``guided_regex`` / ``guided_choice`` / ``guided_grammar`` fields."""
    return one_format([_vllm_format(_VLLM_KINDS[key.removeprefix("guided_")], value, key)
                       for key, value in values.items() if value is not None])


def _vllm_format(kind: str, value: Any, field: str) -> OutputFormat:
    if kind == "json_schema":
        return OutputFormat.json_schema(value, field)  # an object, or its JSON text
    if kind == "regex":
        return OutputFormat.regex(value, field)
    if kind == "choice":
        return OutputFormat.choice(value, field)
    return OutputFormat.grammar(value, field)


def one_format(formats: Sequence[OutputFormat | None]) -> OutputFormat | None:
    """The one format a request asks for; asking for two (a grammar and a schema, say) is a 400 naming both."""
    given = [f for f in formats if f is not None]
    if len(given) > 1:
        names = [f.field for f in given]
        listed = f"both {names[0]} and {names[1]}" if len(names) == 2 else f"all of {', '.join(names)}"
        raise InvalidParameterError(given[1].field, f"give one output format, not {listed}")
    return given[0] if given else None
