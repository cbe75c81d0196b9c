"""What constrained decoding (response_format, forced tool calls) costs per step, against the decode step.

Per step the engine asks every constrained stream's grammar matcher for its mask and applies it to that stream's
row of logits (engine/sample/grammar_masks.py). We replay N streams through exactly that, each walking its own valid
answer to one JSON schema (so the matchers sit in different states: keys, numbers, strings, enums), time each
step's masking, and divide by the mean engine step the bench measured at N streams.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from typing import Any

import torch

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer", "minimum": 0},
        "email": {"type": "string"},
        "role": {"enum": ["admin", "user", "guest"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "address": {"type": "object", "properties": {"city": {"type": "string"}, "zip": {"type": "string"}},
                    "required": ["city", "zip"], "additionalProperties": False},
    },
    "required": ["name", "age", "email", "role", "tags", "address"],
    "additionalProperties": False,
}
_WORDS = ["alpha", "Paris", "qwen", "stream", "token", "grammar", "zürich", "東京", "data", "x"]


def sample_answers(n: int, seed: int = 0) -> list[str]:
    """n different valid answers to SCHEMA, in the separators the grammar allows (", " and ": ")."""
    rng = random.Random(seed)
    return [json.dumps({"name": " ".join(rng.choices(_WORDS, k=2)), "age": rng.randint(0, 99),
                        "email": f"{rng.choice(_WORDS)}@example.com", "role": rng.choice(["admin", "user", "guest"]),
                        "tags": rng.choices(_WORDS, k=rng.randint(0, 3)),
                        "address": {"city": rng.choice(_WORDS), "zip": str(rng.randint(10000, 99999))}},
                       ensure_ascii=False) for _ in range(n)]


def mask_step_s(model: Any, streams: int) -> float:
    """Median seconds one step spends masking ``streams`` constrained rows of [streams, vocab] float32 logits."""
    constraint = model.grammars.json_schema(SCHEMA)
    paths = [model.tokenizer.encode(text, add_special_tokens=False) for text in sample_answers(streams)]
    matchers = [constraint.new_matcher() for _ in range(streams)]
    logits = torch.zeros(streams, model.engine.vocab_size)
    per_step: list[float] = []
    for step in range(min(len(p) for p in paths)):
        start = time.perf_counter()
        for row, matcher in enumerate(matchers):
            matcher.mask_logits(logits[row])
        per_step.append(time.perf_counter() - start)
        for matcher, path in zip(matchers, paths, strict=True):
            if not matcher.accept_token(path[step]):
                raise RuntimeError(f"the grammar rejected a valid answer at token {step}")
    return statistics.median(per_step)


def grammar_overhead(model: Any, streams: int, step_s: float) -> dict[str, float]:
    """Masking cost for ``streams`` constrained streams and its share of one engine step at that concurrency."""
    model.grammars.json_schema(SCHEMA)  # the first compile builds the tokenizer's tables: not a per-step cost
    cost = mask_step_s(model, streams)
    return {"streams": float(streams), "mask_ms_per_step": cost * 1e3, "step_ms": step_s * 1e3,
            "share_of_step": cost / step_s if step_s > 0 else float("nan")}
