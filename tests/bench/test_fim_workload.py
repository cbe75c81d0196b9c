"""The fim bench workload's requests, with no server: keystrokes rebuild the file being typed, in order."""

from __future__ import annotations

import ast
from itertools import pairwise

import pytest

from qwen_stream.bench.fim import CACHE_REUSE, CONTEXT_LENGTH, FIM_SOURCE, TYPED, keystroke_bodies
from qwen_stream.engine.sched.cache_reuse import plan_reuse
from qwen_stream.engine.sched.slot_pool import shared_prefix
from qwen_stream.inputs.fim import FimBudget, FimInput, FimPrompter


def test_keystrokes_type_one_character_each_into_the_same_file() -> None:
    warm, bodies = keystroke_bodies(16, 12)
    assert warm["n_predict"] == 0 and warm["prompt"].strip() == ""
    assert [len(b["prompt"]) for b in bodies] == list(range(len(warm["prompt"]) + 1, len(warm["prompt"]) + 13))
    assert all(b["n_predict"] == 16 and b["ignore_eos"] and b["top_k"] == 1 for b in bodies)
    assert all(b["input_prefix"] == warm["input_prefix"] and b["input_suffix"] == warm["input_suffix"]
               for b in bodies)
    assert len(FIM_SOURCE.encode()) >= 2000
    typed_file = warm["input_prefix"] + TYPED + warm["input_suffix"]
    ast.parse(typed_file)  # the line the user finishes typing belongs there


@pytest.mark.slow  # the Qwen2.5-Coder tokenizer, from the 0.5B alias's GGUF (fetched on first use)
def test_every_keystroke_moves_the_suffix_after_the_cursor() -> None:
    from qwen_stream.models import sources

    prompter = FimPrompter(sources.load_tokenizer(sources.resolve_source("qwen2.5-coder-0.5b", progress=False),
                                                  progress=False))
    warm, bodies = keystroke_bodies(16, 12)
    prompts = [FimInput(b["input_prefix"], b["input_suffix"], repo_level=True, prompt=b["prompt"])
               .build(prompter, FimBudget(CONTEXT_LENGTH)).ids for b in (warm, *bodies)]
    for before, after in pairwise(prompts):
        held = before + [0] * 15  # what the slot keeps: the last prompt and the answer's tokens but its last
        start = shared_prefix(held, after)
        shift = plan_reuse(held, after, start, slot=0, min_run=CACHE_REUSE, max_fill=512)
        # the suffix (300 tokens) moves; computed: the typed line's changed tokens and the last token
        assert shift is not None and shift.served == len(after) - 1 and len(shift.runs) == 1
        assert shift.runs[0].length >= 290 and sum(len(f.token_ids) for f in shift.fills) <= 2
        # llama-server's walk only skips cache tokens: the typed tokens before the suffix stop it
        assert plan_reuse(held, after, start, slot=0, min_run=CACHE_REUSE) is None
