"""Speculative decoding in the engine: drafts checked in the step's one forward, the same text as plain decoding.

Scheduling with a scripted runner (every step known); the runners' logits for every position of a chunk against
feeding the tokens one by one; and the text itself, greedy and sampled, on the tiny random qwen2 (where no two
candidates tie, so nothing may drift).
"""

from __future__ import annotations

import queue
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch

from qwen_stream.engine.loop import Engine, wait_idle
from qwen_stream.engine.runners.base import SeqChunk
from qwen_stream.engine.runners.torch_native import build_torch_runner
from qwen_stream.engine.spec.drafting import SpeculationConfig, StepCost
from qwen_stream.types import FinishReason, SamplingParams, TokenOutput
from tests.support.engine_runs import PROMPTS, run
from tests.support.scripted_runners import RewindingRunner
from tests.support.tiny_models import qwen2, tokens

COUNTING_PROMPT = [5, 6, 7, 8, 9, 10, 11, 12, 20, 21, 5, 6, 7]  # the answer continues 8, 9, 10, ... as before


def test_drafts_from_the_prompt_are_checked_and_kept() -> None:
    params = SamplingParams(temperature=0.0, max_new_tokens=12, ignore_eos=True)
    plain_runner, spec_runner = RewindingRunner(max_seq_len=256), RewindingRunner(max_seq_len=256)
    plain = Engine(plain_runner, eos_token_ids=[0])
    spec = Engine(spec_runner, eos_token_ids=[0], speculate=SpeculationConfig(max_draft=4))
    try:
        expected, _ = run(plain, COUNTING_PROMPT, params)
        got, outs = run(spec, COUNTING_PROMPT, params)
        stats = spec.stats()
    finally:
        plain.shutdown()
        spec.shutdown()
    assert got == expected == list(range(8, 20))
    assert stats.drafted_tokens > 0 and stats.accepted_draft_tokens > 0
    assert stats.steps < plain_runner.fed.__len__()  # fewer forwards than one per token
    assert any(len(o.new_token_ids) > 1 for o in outs)  # several tokens arrive in one step
    assert [c.n_logits for c in spec_runner.fed if len(c.token_ids) > 1 and c.start_pos > 0] != []
    assert sum(len(o.new_token_ids) for o in outs) == 12  # max_new_tokens holds with several tokens a step


class NanInDraftsRunner(RewindingRunner):
    """NaN logits for every position of a drafted chunk (one with several rows) from ``poison`` on."""

    poison = 14

    def forward(self, chunks: Sequence[SeqChunk]) -> torch.Tensor:
        rows = super().forward(chunks)
        at = 0
        for chunk in chunks:
            fed = chunk.token_ids[len(chunk.token_ids) - chunk.logit_rows:]
            for i, token in enumerate(fed):
                if chunk.logit_rows > 1 and token >= self.poison:
                    rows[at + i, 5] = float("nan")
            at += chunk.logit_rows
        return rows


def test_nan_logits_in_a_drafted_chunk_fail_that_request_only() -> None:
    runner = NanInDraftsRunner(max_seq_len=256)
    engine = Engine(runner, eos_token_ids=[0], speculate=SpeculationConfig(max_draft=4))
    try:
        got, outs = run(engine, COUNTING_PROMPT, SamplingParams(temperature=0.0, max_new_tokens=30, ignore_eos=True))
        assert engine.health().ok
        healthy, _ = run(engine, [30, 31], SamplingParams(temperature=0.0, max_new_tokens=3, ignore_eos=True))
    finally:
        engine.shutdown()
    assert outs[-1].error is not None and "NaN" in outs[-1].error and outs[-1].finish_reason is FinishReason.ABORT
    assert got == list(range(8, 8 + len(got))) and max(got) <= NanInDraftsRunner.poison  # no token from a NaN row
    assert healthy == [32, 33, 34]


def test_a_wide_step_drafts_nothing() -> None:
    runner = RewindingRunner(max_slots=2, max_seq_len=256)
    engine = Engine(runner, eos_token_ids=[0], speculate=SpeculationConfig(max_draft=4, step_tokens=1))
    try:
        run(engine, COUNTING_PROMPT, SamplingParams(temperature=0.0, max_new_tokens=8, ignore_eos=True))
        assert engine.stats().drafted_tokens == 0
    finally:
        engine.shutdown()


def test_a_stop_token_inside_accepted_drafts_ends_the_answer_there() -> None:
    params = SamplingParams(temperature=0.0, max_new_tokens=12, ignore_eos=False, stop_token_ids=(11,))
    engine = Engine(RewindingRunner(max_seq_len=256), eos_token_ids=[0], speculate=SpeculationConfig(max_draft=8))
    try:
        got, outs = run(engine, COUNTING_PROMPT, params)
    finally:
        engine.shutdown()
    assert got == [8, 9, 10] and outs[-1].finish_reason is FinishReason.STOP


def test_n_logits_is_checked() -> None:
    runner = build_torch_runner(qwen2(), max_slots=1, max_seq_len=32)
    with pytest.raises(ValueError, match="n_logits"):
        runner.forward([SeqChunk(0, [1, 2], 0, n_logits=3)])


def step_by_step(runner: Any, slot: int, prompt: list[int], more: list[int]) -> torch.Tensor:
    runner.forward([SeqChunk(slot, prompt, 0, want_logits=False)])
    rows = [runner.forward([SeqChunk(slot, [t], len(prompt) + i)])[0].clone() for i, t in enumerate(more)]
    return torch.stack(rows)


def test_native_runner_gives_a_row_for_every_position() -> None:
    runner = build_torch_runner(qwen2(), max_slots=2, max_seq_len=64)
    prompt, more = tokens(10, seed=1), tokens(5, seed=2)
    expected = step_by_step(runner, 0, prompt, more)
    runner.forward([SeqChunk(1, prompt, 0, want_logits=False)])
    # one step: slot 1's five tokens with a row each, beside slot 0's single decode
    both = runner.forward([SeqChunk(0, [more[-1]], len(prompt) + 4), SeqChunk(1, more, len(prompt), n_logits=5)])
    assert both.shape[0] == 6
    assert torch.allclose(both[1:], expected, atol=1e-4)


@pytest.mark.slow  # the real SmolLM2 GGUF on llama.cpp (tests/engine/conftest.py's gguf_path)
@pytest.mark.llamacpp
def test_llama_cpp_runner_gives_a_row_for_every_position(gguf_path: Path) -> None:
    from qwen_stream.engine.runners.llamacpp import LlamaCppRunner

    with LlamaCppRunner(gguf_path, max_slots=2, max_seq_len=128, threads=1) as runner:
        prompt, more = list(range(300, 330)), [400, 401, 402, 403]
        expected = step_by_step(runner, 0, prompt, more)
        runner.forward([SeqChunk(1, prompt, 0, want_logits=False)])
        rows = runner.forward([SeqChunk(1, more, len(prompt), n_logits=4)]).clone()
        # then roll back two positions (rejected drafts) and continue: the same rows as feeding one by one
        again = runner.forward([SeqChunk(1, more[2:], len(prompt) + 2, n_logits=2)]).clone()
    assert rows.argmax(-1).tolist() == expected.argmax(-1).tolist()
    assert again.argmax(-1).tolist() == expected[2:].argmax(-1).tolist()
    for got, want in zip(rows, expected, strict=True):
        assert torch.corrcoef(torch.stack([got, want]))[0, 1] > 0.999


class FlatCost(StepCost):
    """Every forward size costs 10 ms, and measurements change nothing."""

    def __init__(self, max_tokens: int) -> None:
        super().__init__(max_tokens)
        for n in range(1, max_tokens + 1):
            super().record(n, 0.01)

    def record(self, n_tokens: int, seconds: float) -> None:
        pass


def speculating_engine() -> Engine:
    """The tiny model with speculation, its weights the same whatever ran before (they come from torch's global
    generator: whether its texts repeat themselves, which is what prompt lookup drafts from, depends on them)."""
    torch.manual_seed(0)
    spec = Engine(build_torch_runner(qwen2(), max_slots=4, max_seq_len=256), eos_token_ids=[0],
                  speculate=SpeculationConfig(max_draft=6))
    # A forward costs the same for 1..16 tokens, whatever this machine measures: drafting then pays whenever drafts
    # look good. Measured costs made these texts draft nothing at all on some runs (the planner's call, right for
    # the timings it saw), and this module is about speculation's texts, not its planner (test_drafting.py).
    speculator = spec.core.scheduler.speculator
    assert speculator is not None
    speculator.step_cost = FlatCost(speculator.config.step_tokens)
    return spec


@pytest.fixture(scope="module")
def engines() -> Any:
    torch.manual_seed(0)
    plain = Engine(build_torch_runner(qwen2(), max_slots=4, max_seq_len=256), eos_token_ids=[0])
    spec = speculating_engine()  # the same weights
    yield plain, spec
    plain.shutdown()
    spec.shutdown()


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=0.0, max_new_tokens=40, ignore_eos=True),
    SamplingParams(temperature=0.0, max_new_tokens=40, ignore_eos=True, repetition_penalty=1.3,
                   frequency_penalty=0.5),
    # sampled with drawn seeds (as a request without one gets): a seed of the request's own decodes without drafts
    SamplingParams(temperature=0.9, top_p=0.9, max_new_tokens=40, ignore_eos=True, seed=123, seed_drawn=True),
    SamplingParams(temperature=1.2, top_k=20, max_new_tokens=40, ignore_eos=True, seed=7, seed_drawn=True,
                   presence_penalty=0.5),
], ids=["greedy", "greedy-penalties", "top-p-seeded", "top-k-seeded-penalty"])
def test_speculation_gives_the_same_text(engines: Any, params: SamplingParams) -> None:
    plain, spec = engines
    for prompt in PROMPTS:
        assert run(spec, prompt, params)[0] == run(plain, prompt, params)[0]


def test_speculation_really_ran() -> None:
    """Drafts were made, some accepted and some rejected: on an engine of its own (the texts above may run on
    another worker than this test), greedy, on prompts that repeat themselves."""
    spec = speculating_engine()
    try:
        for prompt in PROMPTS:
            run(spec, prompt, SamplingParams(temperature=0.0, max_new_tokens=40, ignore_eos=True))
        stats = spec.stats()
    finally:
        spec.shutdown()
    assert 0 < stats.accepted_draft_tokens < stats.drafted_tokens


def test_same_seed_same_text_alone_or_in_a_batch(engines: Any) -> None:
    _, spec = engines
    params = SamplingParams(temperature=1.0, max_new_tokens=30, ignore_eos=True, seed=99)
    alone = run(spec, PROMPTS[0], params)[0]
    outputs: list[queue.SimpleQueue[TokenOutput]] = [queue.SimpleQueue() for _ in PROMPTS]
    for prompt, q in zip(PROMPTS, outputs, strict=True):
        spec.submit(prompt, params, q.put)
    got: list[int] = []
    while True:
        out = outputs[0].get(timeout=30)
        got += out.new_token_ids
        if out.finish_reason is not None:
            break
    assert wait_idle(spec)
    assert got == alone
