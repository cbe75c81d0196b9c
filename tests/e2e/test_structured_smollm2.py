"""A real small model (SmolLM2-135M) writes JSON that parses and validates under a schema, 20 seeds out of 20,
on both runners, all 20 requests decoded together in one batch."""

from __future__ import annotations

import json

import jsonschema
import pytest

from qwen_stream.api import ChatModel
from tests.support.real_runners import RUNNERS

pytestmark = pytest.mark.slow

SCHEMA = {"type": "object", "properties": {
    "name": {"type": "string", "maxLength": 24},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "city": {"type": "string", "maxLength": 24},
    "hobbies": {"type": "array", "items": {"type": "string", "maxLength": 24}, "maxItems": 3},
}, "required": ["name", "age", "city", "hobbies"], "additionalProperties": False}


@pytest.mark.parametrize("runner", RUNNERS)
def test_twenty_seeds_of_a_json_schema_request_all_validate(runner: str) -> None:
    with ChatModel.load("smollm2-135m", runner=runner, max_batch_size=16, context_length=1024,
                        progress=False) as model:
        streams = [model.stream("Invent a person: their name, age, city and hobbies, as JSON.", json_schema=SCHEMA,
                                temperature=1.0, seed=seed, max_new_tokens=250) for seed in range(20)]
        finals = [stream.collect() for stream in streams]
    for final in finals:
        jsonschema.validate(json.loads(final.text), SCHEMA)
        assert final.finish_reason.value == "stop", final.text
    assert len({final.text for final in finals}) > 10  # sampled answers, not one forced string
