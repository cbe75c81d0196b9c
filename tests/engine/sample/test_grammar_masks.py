"""Grammar-constrained decoding through the engine (tiny random qwen2, PyTorch runner): a random model can only
write valid JSON when the mask really decides every token, so these outputs test the mask, not the model."""

from __future__ import annotations

import json
import threading
from typing import Any

import jsonschema
import pytest

from qwen_stream.api import ChatModel
from qwen_stream.inputs.grammars import GrammarError
from qwen_stream.types import FinishReason

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 8},
    "answer": {"enum": ["yes", "no"]},
    "score": {"type": "integer", "minimum": 0, "maximum": 9},
    "tags": {"type": "array", "items": {"type": "boolean"}, "maxItems": 2},
}, "required": ["name", "answer", "score", "tags"], "additionalProperties": False}
SAMPLED: dict[str, Any] = {"temperature": 1.0, "top_p": 0.95, "max_new_tokens": 120}


def run(model: ChatModel, query: str, **kw: Any) -> tuple[str, FinishReason | None]:
    event = model.stream(query, **kw).collect()
    return event.text, event.finish_reason


@pytest.mark.parametrize("settings", [{"temperature": 0, "max_new_tokens": 120}, SAMPLED,
                                      {**SAMPLED, "repetition_penalty": 1.3, "presence_penalty": 1.0, "top_k": 5}])
def test_output_parses_and_validates_and_ends_with_stop(tiny_chat_model: ChatModel, settings: dict[str, Any]) -> None:
    for seed in range(3):
        text, finish = run(tiny_chat_model, "Describe yourself.", json_schema=SCHEMA, seed=seed, **settings)
        jsonschema.validate(json.loads(text), SCHEMA)
        assert finish is FinishReason.STOP


def test_the_grammar_end_forces_eos_even_with_ignore_eos(tiny_chat_model: ChatModel) -> None:
    text, finish = run(tiny_chat_model, "Yes or no?", json_schema={"enum": ["yes", "no"]}, ignore_eos=True,
                       temperature=1.0, seed=1, max_new_tokens=50)
    assert json.loads(text) in ("yes", "no") and finish is FinishReason.STOP


def test_json_object_response_format(tiny_chat_model: ChatModel) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    text, _ = run(tiny_chat_model, "Any JSON.", response_format={"type": "json_schema",
                                                                 "json_schema": {"name": "x", "schema": schema}},
                  temperature=0, max_new_tokens=80)
    jsonschema.validate(json.loads(text), schema)
    text, _ = run(tiny_chat_model, "Any JSON.", response_format={"type": "json_object"}, temperature=0,
                  max_new_tokens=8)
    assert text.startswith("{")  # 8 tokens of a random model: the start of an object, cut by the length limit


def test_constrained_and_free_requests_share_a_batch_without_touching_each_other(tiny_chat_model: ChatModel) -> None:
    free = [({"temperature": 0, "max_new_tokens": 24}, f"Free question {i}") for i in range(4)]
    free += [({**SAMPLED, "max_new_tokens": 24, "seed": i}, f"Sampled question {i}") for i in range(4)]
    alone = [run(tiny_chat_model, q, **s)[0] for s, q in free]
    jobs = free + [({**SAMPLED, "seed": i, "json_schema": SCHEMA}, f"JSON {i}") for i in range(8)]
    together: list[str] = [""] * len(jobs)

    def worker(i: int) -> None:
        settings, query = jobs[i]
        together[i] = run(tiny_chat_model, query, **settings)[0]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together[:8] == alone
    for text in together[8:]:
        jsonschema.validate(json.loads(text), SCHEMA)
    assert tiny_chat_model.engine.core.timings.constrain_s > 0


def test_bad_schema_is_a_value_error_before_anything_runs(tiny_chat_model: ChatModel) -> None:
    with pytest.raises(GrammarError, match="Unsupported type"):
        tiny_chat_model.stream("x", json_schema={"type": "nonsense"})
    with pytest.raises(ValueError, match="not both"):
        tiny_chat_model.stream("x", json_schema=SCHEMA, response_format={"type": "json_object"})
    assert run(tiny_chat_model, "still serving", max_new_tokens=2, temperature=0)[1] is FinishReason.LENGTH
