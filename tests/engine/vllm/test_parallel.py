"""Tensor parallelism on vLLM's CPU build: two workers, one core each, the same greedy answers as the native
engine on the same checkpoint. (Ray across hosts needs vLLM's GPU builds: see scripts/ray_cluster.sh.)"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from qwen_stream.engine.vllm.backend import vllm_available

pytestmark = [pytest.mark.slow, pytest.mark.vllm,
              pytest.mark.skipif(not vllm_available(), reason="vllm is not installed (it lives in .venv-vllm)"),
              pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="tensor parallel 2 needs 2 cores")]

QUESTIONS = ["Tell me a story.", "What is 2+2?", "Name a colour."]


def greedy_ids(model: Any, question: str) -> list[int]:
    events = list(model.stream(question, max_new_tokens=12, ignore_eos=True, temperature=0.0))
    return [t for e in events for t in e.token_ids]


def test_tensor_parallel_2_gives_the_native_greedy_answers(tiny_model_dir_hd32: Path) -> None:
    from qwen_stream.api import ChatModel
    from qwen_stream.engine.vllm.mapping import VllmOptions

    with ChatModel.load(str(tiny_model_dir_hd32), runner="torch", context_length=256, progress=False) as native:
        expected = [greedy_ids(native, q) for q in QUESTIONS]
    with ChatModel.load(str(tiny_model_dir_hd32), backend="vllm", context_length=256, progress=False,
                        vllm_options=VllmOptions(tensor_parallel_size=2)) as parallel:
        assert [greedy_ids(parallel, q) for q in QUESTIONS] == expected
