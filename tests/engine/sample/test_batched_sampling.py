"""The engine samples every row of a step in one batch: a seeded request's text must not depend on its batch
mates' settings, nor on speculation, with Qwen's own sampling defaults (tiny random qwen2, torch runner)."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from typing import Any

import pytest

from qwen_stream.engine.loop import Engine, wait_idle
from qwen_stream.engine.runners.torch_native import build_torch_runner
from qwen_stream.engine.spec.drafting import SpeculationConfig
from qwen_stream.types import SamplingParams, TokenOutput
from tests.support.engine_runs import PROMPTS, run
from tests.support.tiny_models import qwen2

QWEN_DEFAULTS = SamplingParams(temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05, max_new_tokens=30,
                               ignore_eos=True, seed=2024)
MATES = [
    SamplingParams(temperature=0.0, max_new_tokens=30, ignore_eos=True),
    SamplingParams(temperature=1.3, presence_penalty=1.0, frequency_penalty=0.5, max_new_tokens=12, ignore_eos=True),
    SamplingParams(temperature=0.9, top_p=0.95, min_p=0.05, max_new_tokens=40, ignore_eos=True, seed=5,
                   logit_bias={17: 3.0}),
]


@pytest.fixture(scope="module")
def engines() -> Iterator[tuple[Engine, Engine]]:
    model = qwen2()
    plain = Engine(build_torch_runner(model, max_slots=4, max_seq_len=256), eos_token_ids=[0])
    spec = Engine(build_torch_runner(model, max_slots=4, max_seq_len=256), eos_token_ids=[0],
                  speculate=SpeculationConfig(max_draft=6))
    yield plain, spec
    plain.shutdown()
    spec.shutdown()


def run_with_mates(engine: Engine, prompt: list[int], params: SamplingParams) -> list[int]:
    """params on prompt, submitted together with MATES (on the other prompts): the first request's tokens."""
    requests = [(prompt, params), *zip(PROMPTS[1:], MATES, strict=True)]
    outputs: list[queue.SimpleQueue[TokenOutput]] = [queue.SimpleQueue() for _ in requests]
    for (ids, sampling), out in zip(requests, outputs, strict=True):
        engine.submit(ids, sampling, out.put)
    got: list[int] = []
    while True:
        out = outputs[0].get(timeout=60)
        assert out.error is None
        got += out.new_token_ids
        if out.finish_reason is not None:
            break
    assert wait_idle(engine)
    return got


def test_qwen_defaults_give_one_text_alone_with_mates_and_with_drafts(engines: Any) -> None:
    plain, spec = engines
    prompt = PROMPTS[0]
    alone = run(plain, prompt, QWEN_DEFAULTS)[0]
    assert len(alone) == 30 and len(set(alone)) > 5  # really sampled
    assert run_with_mates(plain, prompt, QWEN_DEFAULTS) == alone
    assert run(spec, prompt, QWEN_DEFAULTS)[0] == alone
    assert run_with_mates(spec, prompt, QWEN_DEFAULTS) == alone
    assert run(plain, prompt, QWEN_DEFAULTS.with_(seed=2025))[0] != alone


def test_a_greedy_request_is_its_argmax_text_whatever_its_mates(engines: Any) -> None:
    plain, _ = engines
    greedy = SamplingParams(temperature=0.0, repetition_penalty=1.2, max_new_tokens=20, ignore_eos=True)
    assert run_with_mates(plain, PROMPTS[0], greedy) == run(plain, PROMPTS[0], greedy)[0]
