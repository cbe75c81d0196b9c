"""Output formats: every protocol's way of asking for one becomes one ``OutputFormat`` that names the field it came
from, and each kind compiles (on the real Qwen tokenizer) into a grammar that allows exactly what it says; one that
does not compile is a GrammarError quoting the compiler and naming the field."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from qwen_stream.errors import GrammarError, InvalidParameterError, RequestError
from qwen_stream.inputs.grammars import Grammars
from qwen_stream.inputs.output_format import (
    OutputFormat,
    guided_fields,
    one_format,
    response_format,
    structured_outputs,
)

VOCAB = 151936
IM_END = 151645


@pytest.fixture(scope="module")
def grammars(qwen_tokenizer: Any) -> Grammars:
    return Grammars(qwen_tokenizer, vocab_size=VOCAB, stop_token_ids=[IM_END])


def accepts(grammars: Grammars, tokenizer: Any, output: OutputFormat, text: str) -> bool:
    """Whether the format's grammar takes ``text`` whole, token by token (each allowed by its mask), then ends."""
    matcher = grammars.compile(output).new_matcher()
    for token_id in [*tokenizer.encode(text, add_special_tokens=False), IM_END]:
        logits = torch.zeros(VOCAB)
        matcher.mask_logits(logits)
        if not torch.isfinite(logits[token_id]) or not matcher.accept_token(token_id):
            return False
    return matcher.is_terminated()


@pytest.mark.parametrize(("value", "expected"), [
    ({"type": "text"}, None),
    ({"type": "json_object"}, OutputFormat("json_object", None, "response_format")),
    ({"type": "json_schema", "json_schema": {"name": "n", "schema": {"type": "integer"}}},
     OutputFormat("json_schema", {"type": "integer"}, "response_format.json_schema.schema")),
    # llama-server's forms: the schema beside the type, under either type
    ({"type": "json_object", "schema": {"type": "string"}},
     OutputFormat("json_schema", {"type": "string"}, "response_format.schema")),
    ({"type": "json_schema", "schema": {"type": "string"}},
     OutputFormat("json_schema", {"type": "string"}, "response_format.schema")),
    ({"type": "json_object", "schema": {}}, OutputFormat("json_object", None, "response_format.schema")),
])
def test_response_format_in_openai_and_llama_server_shapes(value: Any, expected: OutputFormat | None) -> None:
    assert response_format(value) == expected


def test_vllm_fields_name_the_key_they_came_from() -> None:
    assert structured_outputs({"regex": "[0-9]+", "backend": "xgrammar"}) == \
        OutputFormat("regex", "[0-9]+", "structured_outputs.regex")
    assert structured_outputs({"choice": ["a", "b"]}) == OutputFormat("choice", ("a", "b"), "structured_outputs.choice")
    assert structured_outputs({"json_object": True}).kind == "json_object"  # type: ignore[union-attr]
    assert guided_fields({"guided_grammar": 'root ::= "x"', "guided_regex": None}) == \
        OutputFormat("grammar", 'root ::= "x"', "guided_grammar")
    with pytest.raises(GrammarError, match=r"structured_outputs\.structural_tag is not supported") as refused:
        structured_outputs({"structural_tag": "{}"})
    assert refused.value.param == "structured_outputs.structural_tag"


def test_two_formats_at_once_are_refused_naming_both() -> None:
    with pytest.raises(InvalidParameterError, match="not both response_format and grammar"):
        one_format([OutputFormat.json_object(), OutputFormat.grammar('root ::= "x"')])
    with pytest.raises(InvalidParameterError, match=r"structured_outputs\.regex and structured_outputs\.choice"):
        structured_outputs({"regex": "a", "choice": ["a"]})


@pytest.mark.parametrize(("bad", "field"), [
    (lambda: OutputFormat.choice([]), "choice"), (lambda: OutputFormat.choice("ab"), "choice"),
    (lambda: OutputFormat.regex(""), "regex"), (lambda: OutputFormat.grammar("  "), "grammar"),
    (lambda: response_format("json"), "response_format"),
    (lambda: response_format({"type": "xml"}), "response_format"),
])
def test_malformed_formats_are_refused_with_their_field(bad: Any, field: str) -> None:
    with pytest.raises(GrammarError) as refused:
        bad()
    assert refused.value.param == field and isinstance(refused.value, RequestError)


def test_a_gbnf_grammar_allows_exactly_its_words(grammars: Grammars, qwen_tokenizer: Any) -> None:
    yes_no = OutputFormat.grammar('root ::= "yes" | "no"')
    assert accepts(grammars, qwen_tokenizer, yes_no, "yes") and accepts(grammars, qwen_tokenizer, yes_no, "no")
    assert not accepts(grammars, qwen_tokenizer, yes_no, "maybe")
    assert not accepts(grammars, qwen_tokenizer, yes_no, "yes!")


def test_llama_cpp_gbnf_with_rules_classes_comments_and_repeats(grammars: Grammars, qwen_tokenizer: Any) -> None:
    date = OutputFormat.grammar('# an ISO date\nroot ::= year "-" two "-" two\nyear ::= [0-9]{4}\n'
                                'two ::= [0-9] [0-9]\n')
    assert accepts(grammars, qwen_tokenizer, date, "2026-12-07")
    assert not accepts(grammars, qwen_tokenizer, date, "26-12-07")


def test_regex_and_choice_compile_to_what_they_say(grammars: Grammars, qwen_tokenizer: Any) -> None:
    phone = OutputFormat.regex(r"\d{3}-\d{4}")
    assert accepts(grammars, qwen_tokenizer, phone, "555-1234")
    assert not accepts(grammars, qwen_tokenizer, phone, "5551234")
    # choices with quotes, backslashes and newlines are literal strings, not grammar syntax
    tricky = OutputFormat.choice(['say "hi"', "back\\slash", "two\nlines"])
    for choice in tricky.source:
        assert accepts(grammars, qwen_tokenizer, tricky, choice)
    assert not accepts(grammars, qwen_tokenizer, tricky, "say hi")


@pytest.mark.parametrize(("output", "message"), [
    (OutputFormat.grammar("root ::= undefined_rule"), 'Rule "undefined_rule" is not defined'),
    (OutputFormat.grammar('root ::= "unclosed'), "Expect \" in string literal"),
    (OutputFormat.grammar('answer ::= "x"'), 'The root rule with name "root" is not found'),
    (OutputFormat.regex("[0-9"), "Unclosed '['"),
])
def test_what_does_not_compile_quotes_the_compiler_and_names_the_field(grammars: Grammars, output: OutputFormat,
                                                                       message: str) -> None:
    with pytest.raises(GrammarError) as refused:
        grammars.compile(output)
    assert str(refused.value).startswith("cannot compile the ") and f"({output.field}): " in str(refused.value)
    assert message in str(refused.value)
    assert refused.value.param == output.field
    assert "/project/" not in str(refused.value)  # xgrammar's C++ source location is trimmed


def test_compiled_grammars_are_cached_by_kind_and_text(grammars: Grammars) -> None:
    first = grammars.compile(OutputFormat.regex("[a-c]+", "guided_regex"))
    assert grammars.compile(OutputFormat.regex("[a-c]+", "structured_outputs.regex")) is first
    assert grammars.compile(OutputFormat.grammar('root ::= [a-c]+')) is not first
