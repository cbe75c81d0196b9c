"""Grammars for constrained decoding (JSON, regular expressions, choices, GBNF grammars, forced tool calls),
compiled at the edge from the tokenizer.

The engine core only sees the TokenConstraint / TokenMatcher protocol (types.py): each step it asks a request's
matcher to mask its row of logits and then feeds it the sampled token. The grammar library is xgrammar (its
per-token mask is ~5x cheaper than llguidance's on our tokenizers: benchmarks/grammar_engines.py). A compiled
grammar is immutable and cached (LRU keyed by its source text); each request gets its own matcher.

    grammars = model.grammars
    constraint = grammars.compile(OutputFormat.grammar('root ::= "yes" | "no"'))  # any OutputFormat
    constraint = grammars.json_schema({"type": "object", ...})           # or grammars.json_object()
    constraint = grammars.response_format({"type": "json_schema", "json_schema": {"name": ..., "schema": ...}})
    constraint = grammars.tool_calls(tools, tool_choice="required")       # Hermes <tool_call>{...}</tool_call>
    model.stream(..., constraint=constraint)                              # or response_format= / json_schema=
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from qwen_stream.errors import GrammarError
from qwen_stream.inputs.output_format import OutputFormat, response_format
from qwen_stream.types import TokenConstraint, TokenMatcher

__all__ = ["TOOL_CALL_FORMATS", "GrammarError", "Grammars", "XGrammarConstraint"]

JsonSchema = Mapping[str, Any] | str | bool
# Formats the tools engineer can pick (xgrammar's model structural tags): Hermes-style JSON calls as Qwen2.5
# and Qwen3 emit (the same markup; Qwen3 may think first), and Qwen3-Coder's XML calls.
TOOL_CALL_FORMATS = {"hermes": "qwen_3", "qwen3": "qwen_3", "qwen3_coder": "qwen_3_coder"}


class XGrammarConstraint:
    """A compiled xgrammar grammar; ``new_matcher`` gives each request its own state."""

    def __init__(self, compiled: Any, vocab_size: int) -> None:
        self.compiled = compiled
        self.vocab_size = vocab_size

    def new_matcher(self) -> TokenMatcher:
        return XGrammarMatcher(self.compiled, self.vocab_size)


class XGrammarMatcher:
    """One request's grammar state; used on the engine thread only."""

    def __init__(self, compiled: Any, vocab_size: int) -> None:
        import xgrammar as xgr

        self._xgr = xgr
        self._matcher = xgr.GrammarMatcher(compiled)
        self._bitmask = xgr.allocate_token_bitmask(1, vocab_size)  # [1, ceil(vocab / 32)] int32, bit set = allowed
        self._vocab_size = vocab_size

    def mask_logits(self, logits: torch.Tensor) -> None:
        if not self._matcher.fill_next_token_bitmask(self._bitmask, 0):
            return  # every token is allowed: nothing to mask
        bitmask = self._bitmask if logits.device.type == "cpu" else self._bitmask.to(logits.device)
        # vocab_size: the bitmask covers the model's whole (padded) vocabulary, so no id escapes the mask
        self._xgr.apply_token_bitmask_inplace(logits.unsqueeze(0), bitmask, vocab_size=self._vocab_size)

    def accept_token(self, token_id: int) -> bool:
        return bool(self._matcher.accept_token(token_id))

    def is_terminated(self) -> bool:
        return bool(self._matcher.is_terminated())


class Grammars:
    """Compiles and caches the constraints for one model (its tokenizer, vocabulary width and stop tokens)."""

    def __init__(self, tokenizer: Any, *, vocab_size: int, stop_token_ids: Sequence[int], cache_size: int = 64) -> None:
        self._tokenizer = tokenizer
        self.vocab_size = vocab_size
        self.stop_token_ids = [int(t) for t in stop_token_ids]
        self.cache_size = cache_size
        self._cache: OrderedDict[str, TokenConstraint] = OrderedDict()
        self._lock = threading.Lock()
        self._compiler: Any = None

    # ---- what front ends call -------------------------------------------------------------------------------

    def compile(self, output: OutputFormat) -> TokenConstraint:
        """The constraint for ``output``; GrammarError (a 400 naming ``output.field``) quotes the compiler."""
        what = {"json_schema": "the JSON schema", "json_object": "the JSON grammar", "regex": "the regular "
                "expression", "choice": "the choice", "grammar": "the grammar"}[output.kind]
        return self._cached(output.key, f"{what} ({output.field})", lambda c: self._compile(c, output),
                            param=output.field)

    def json_schema(self, schema: JsonSchema | None) -> TokenConstraint:
        """Output one JSON value valid under ``schema`` (a dict or its JSON text); None: any JSON object."""
        return self.compile(OutputFormat.json_object() if schema is None else OutputFormat.json_schema(schema))

    def json_object(self) -> TokenConstraint:
        """Output one JSON object, any keys (OpenAI's ``response_format: {"type": "json_object"}``)."""
        return self.compile(OutputFormat.json_object())

    def response_format(self, value: Mapping[str, Any] | None) -> TokenConstraint | None:
        """OpenAI's ``response_format`` (or llama-server's form of it); None or ``{"type": "text"}``: nothing."""
        output = response_format(value)
        return None if output is None else self.compile(output)

    def tool_calls(self, tools: Sequence[Mapping[str, Any]], tool_choice: str | Mapping[str, Any] = "required", *,
                   parallel_tool_calls: bool = True, call_format: str = "hermes",
                   reasoning: bool = False) -> TokenConstraint:
        """Tool calls as the model writes them, names limited to ``tools`` and arguments to their schemas.

        ``tools``: OpenAI function tools (``{"type": "function", "function": {"name", "parameters"}}``).
        ``tool_choice``: "required" (one call or more, nothing else) or ``{"type": "function", "function":
        {"name": N}}`` (exactly that call); "auto" lets text come first and constrains calls once one starts.
        ``call_format``: "hermes" (``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``, Qwen2.5 and
        Qwen3) or "qwen3_coder" (XML). ``reasoning``: allow a ``<think>...</think>`` block first (Qwen3)."""
        if call_format not in TOOL_CALL_FORMATS:
            raise GrammarError(f"call_format must be one of {', '.join(TOOL_CALL_FORMATS)}, got {call_format!r}")
        spec = {"tools": list(tools), "tool_choice": tool_choice, "parallel": parallel_tool_calls,
                "format": call_format, "reasoning": reasoning}
        key = "tools:" + json.dumps(spec, sort_keys=True, default=str)
        return self._cached(key, "the tool-call grammar", lambda c: self._compile_tool_calls(c, spec))

    # ---- compiling and caching ------------------------------------------------------------------------------

    def _compile_tool_calls(self, compiler: Any, spec: dict[str, Any]) -> Any:
        import xgrammar as xgr

        tag = xgr.get_model_structural_tag(
            TOOL_CALL_FORMATS[spec["format"]], tools=spec["tools"], tool_choice=spec["tool_choice"],
            reasoning="auto" if spec["reasoning"] else "disabled", parallel_tool_calls=spec["parallel"])
        return compiler.compile_structural_tag(tag)

    @staticmethod
    def _compile(compiler: Any, output: OutputFormat) -> Any:
        if output.kind in ("json_schema", "json_object"):
            schema = {"type": "object"} if output.kind == "json_object" else output.source
            return compiler.compile_json_schema(_schema_text(schema, output.field), any_whitespace=False)
        if output.kind == "regex":
            return compiler.compile_regex(output.source)
        return compiler.compile_grammar(output.ebnf if output.kind == "choice" else output.source)

    def _cached(self, key: str, what: str, compile_with: Callable[[Any], Any],
                param: str | None = None) -> TokenConstraint:
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
            compiler = self._get_compiler()
        try:
            constraint = XGrammarConstraint(compile_with(compiler), self.vocab_size)
        except GrammarError:
            raise  # ours, already saying what is wrong
        except (RuntimeError, ValueError, TypeError) as exc:  # xgrammar's errors for bad schemas and grammars
            raise GrammarError(f"cannot compile {what}: {_first_line(exc)}", param=param) from exc
        with self._lock:
            self._cache[key] = constraint
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        return constraint

    def _get_compiler(self) -> Any:
        """xgrammar's compiler over our vocabulary, made on first use (0.4 s for 49k tokens, 1.1 s for 151k)."""
        if self._compiler is None:
            try:
                import xgrammar as xgr
            except ImportError as exc:
                raise GrammarError("constrained output needs xgrammar: pip install 'qwen-stream[structured]'") from exc

            info = xgr.TokenizerInfo.from_huggingface(self._tokenizer, vocab_size=self.vocab_size,
                                                      stop_token_ids=self.stop_token_ids)
            self._compiler = xgr.GrammarCompiler(info, cache_enabled=False)  # our LRU caches, bounded by count
        return self._compiler


def _schema_text(schema: JsonSchema, field: str) -> str:
    if isinstance(schema, str):
        try:
            json.loads(schema)
        except json.JSONDecodeError as exc:
            raise GrammarError(f"the JSON schema is not valid JSON: {exc}", param=field) from exc
        return schema
    if isinstance(schema, bool | Mapping):
        return json.dumps(schema, ensure_ascii=False)
    raise GrammarError(f"a JSON schema must be an object, got {type(schema).__name__}", param=field)


_CPP_PREFIX = re.compile(r"^\[[\d:]+\] \S+:\d+: ")  # xgrammar's "[15:44:54] /project/cpp/x.cc:94: "


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return _CPP_PREFIX.sub("", lines[0]) if lines else type(exc).__name__
