"""The fim bench workload's requests, with no server: keystrokes rebuild the file being typed, in order."""

from __future__ import annotations

import ast

from qwen_stream.bench.fim import FIM_SOURCE, TYPED, keystroke_bodies


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
