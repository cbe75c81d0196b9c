"""Prefix reuse: a finished slot keeps its KV, and the next prompt that starts the same way prefills only the rest.

Scheduling is checked with a scripted runner (every step is known exactly); correctness of the reused KV with the
real runners: the native PyTorch runner on a tiny random model, llama.cpp on the real SmolLM2 GGUF, and a real
multi-turn ChatModel conversation.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from qwen_stream.engine.loop import Engine, wait_idle
from qwen_stream.engine.runners.base import SeqChunk
from qwen_stream.engine.runners.torch_native import build_torch_runner
from qwen_stream.engine.sched.scheduler import Scheduler
from qwen_stream.engine.sched.slot_pool import KeptRow
from qwen_stream.types import SamplingParams, TokenOutput
from tests.support.scripted_runners import RewindingRunner
from tests.support.tiny_models import qwen2, tokens

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=3, ignore_eos=True)
SEEDED = SamplingParams(temperature=0.0, max_new_tokens=3, ignore_eos=True, seed=7)  # a seed of its own: exact


def run(engine: Engine, prompt: list[int], params: SamplingParams = GREEDY) -> list[int]:
    outputs: queue.SimpleQueue[TokenOutput] = queue.SimpleQueue()
    engine.submit(prompt, params, outputs.put)
    got: list[int] = []
    while True:
        out = outputs.get(timeout=10)
        got += out.new_token_ids
        if out.finish_reason is not None:
            assert wait_idle(engine)
            return got


@pytest.fixture
def rewinding() -> Iterator[tuple[Engine, RewindingRunner]]:
    runner = RewindingRunner()
    engine = Engine(runner, eos_token_ids=[0], max_running=2)
    yield engine, runner
    engine.shutdown()


def test_next_turn_prefills_only_what_is_new(rewinding: tuple[Engine, RewindingRunner]) -> None:
    engine, runner = rewinding
    first = [10, 11, 12, 13]
    answer = run(engine, first)
    assert answer == [14, 15, 16]
    runner.fed.clear()
    # turn 2 = turn 1's prompt + answer + a new question: the slot holds all of it but the last sampled token
    second = first + answer + [40, 41]
    assert run(engine, second) == [42, 43, 44]
    prefill = runner.fed[0]
    assert (prefill.start_pos, prefill.token_ids) == (len(first) + 2, second[len(first) + 2:])
    assert engine.stats().reused_prompt_tokens == len(first) + 2


def test_an_exact_repeat_computes_nothing_and_samples_from_the_kept_logits() -> None:
    # The cold run's last prefill chunk gave the logits row after the prompt; the slot keeps it with the KV, so an
    # exact repeat (a retry, Regenerate, n > 1 one after another) samples its first token from that very row: no
    # forward until its second token, and bit for bit the cold run's choice.
    runner = RewindingRunner()
    engine = Engine(runner, eos_token_ids=[0], max_running=2, prefill_chunk=4)
    try:
        prompt = list(range(20, 30))
        assert run(engine, prompt) == [30, 31, 32]
        runner.fed.clear()
        assert run(engine, prompt) == [30, 31, 32]
        assert [(c.start_pos, c.token_ids) for c in runner.fed] == [(10, [30]), (11, [31])]  # decodes only
        assert engine.stats().reused_prompt_tokens == len(prompt)
        runner.fed.clear()
        assert run(engine, prompt) == [30, 31, 32]  # and again: the repeat kept the row for the slot too
        assert runner.fed[0].start_pos == len(prompt)
    finally:
        engine.shutdown()


def test_an_exact_repeat_without_kept_logits_recomputes_what_it_must() -> None:
    # The slot holds the whole prompt but not its row: its KV came from a longer prompt (here: the prompt plus two
    # more tokens). A request with a drawn seed feeds the last token again, for its row. One with a seed of its own
    # must get the row a cold run computes: a cold prefill of 10 tokens in chunks of 4 computes [0, 4), [4, 8),
    # [8, 10), so it recomputes [8, 10), the same computation on the same KV; the last token alone ran other kernels
    # and moved the row by ~1e-6 (issue 10).
    runner = RewindingRunner()
    engine = Engine(runner, eos_token_ids=[0], max_running=2, prefill_chunk=4)
    try:
        prompt = list(range(20, 30))
        run(engine, [*prompt, 30, 31])
        runner.fed.clear()
        assert run(engine, prompt) == [30, 31, 32]
        assert (runner.fed[0].start_pos, runner.fed[0].token_ids) == (9, [29])
        run(engine, [*prompt, 30, 31])
        runner.fed.clear()
        assert run(engine, prompt, SEEDED) == [30, 31, 32]
        assert (runner.fed[0].start_pos, runner.fed[0].token_ids) == (8, [28, 29])
    finally:
        engine.shutdown()


def _pool_holding(*held: list[int] | None) -> Scheduler:
    """A scheduler whose slots all ran once and were given back in order, slot i keeping ``held[i]`` (None: nothing)."""
    scheduler = Scheduler(max_slots=len(held), max_model_len=64, reuse_prefix=True)
    for slot in range(len(held)):
        scheduler.slots.take(slot)
    for slot, kept in enumerate(held):
        scheduler.slots.release(slot, kept)
    return scheduler


def test_a_new_prompt_takes_an_empty_slot_before_evicting_a_cache() -> None:
    assert _pool_holding([1, 2, 3], None, None).slots.best_match([9, 9, 9]) == (1, 0)  # slot 0's cache survives
    slots = _pool_holding([1, 2, 3], [4, 5], [6, 7]).slots
    assert slots.best_match([9, 9, 9]) == (0, 0)  # all hold something: the least recently freed goes
    assert slots.best_match([6, 7, 8]) == (2, 2)
    assert slots.best_match([6, 7]) == (2, 1)  # an exact repeat without kept logits: its last token again
    assert slots.best_match([6, 7, 8]) == (2, 2)  # a longer prompt feeds only its new tokens
    slots.reuse_prefix = False
    assert slots.best_match([6, 7, 8]) == (0, 0)


def test_a_slot_keeps_the_logits_row_only_for_the_prompt_it_came_after() -> None:
    scheduler = _pool_holding(None, None)
    scheduler.slots.take(0)
    row = torch.arange(5.0)
    scheduler.slots.release(0, [6, 7, 8, 9], KeptRow(2, row, exact=False))  # prompt [6, 7], answer [8, 9]
    assert scheduler.slots.best_match([6, 7]) == (0, 2)  # the whole prompt, nothing to compute
    assert scheduler.slots.kept_row(0, [6, 7]) == KeptRow(2, row, exact=False)
    assert scheduler.slots.kept_row(0, [6, 7], exact=True) is None  # not a cold run's row: no use to a seeded one
    assert scheduler.slots.kept_row(0, [6, 7, 8]) is None  # another prompt: the row is not its own
    # a shorter prompt recomputes its last token, all of it here: nothing to reuse, so the empty slot
    assert scheduler.slots.best_match([6]) == (1, 0)
    scheduler.slots.take(0)
    assert scheduler.slots.kept_row(0, [6, 7]) is None  # taken: what the slot kept is gone


def test_reuse_can_be_turned_off_and_needs_a_rewinding_runner() -> None:
    runner = RewindingRunner()
    engine = Engine(runner, eos_token_ids=[0], max_running=2, reuse_prefix=False)
    try:
        run(engine, [10, 11, 12])
        run(engine, [10, 11, 12, 13])
        assert engine.stats().reused_prompt_tokens == 0
        assert runner.fed[-3].start_pos == 0 and len(runner.fed[-3].token_ids) == 4
    finally:
        engine.shutdown()


def continue_after(runner: Any, slot: int, held: list[int], reused: int, rest: list[int]) -> torch.Tensor:
    """Fill the slot with ``held``, then rewind to ``reused`` and feed ``rest``: the logits of rest's last token."""
    runner.forward([SeqChunk(slot, held, 0, want_logits=False)])
    return runner.forward([SeqChunk(slot, rest, reused)])[0].clone()


def test_native_runner_rewinds_into_a_slot_exactly() -> None:
    runner = build_torch_runner(qwen2(), max_slots=2, max_seq_len=64)
    shared, old_tail, new_tail = tokens(12, seed=3), tokens(9, seed=4), tokens(5, seed=5)
    fresh = runner.forward([SeqChunk(1, shared + new_tail, 0)])[0].clone()
    reused = continue_after(runner, 0, shared + old_tail, len(shared), new_tail)
    assert torch.allclose(reused, fresh, atol=1e-4)


@pytest.mark.slow  # the real SmolLM2 GGUF on llama.cpp (tests/engine/conftest.py's gguf_path)
@pytest.mark.llamacpp
def test_llama_cpp_runner_rewinds_into_a_slot(gguf_path: Path) -> None:
    from qwen_stream.engine.runners.llamacpp import LlamaCppRunner

    with LlamaCppRunner(gguf_path, max_slots=2, max_seq_len=128, threads=1) as runner:
        shared, old_tail, new_tail = list(range(300, 330)), list(range(500, 510)), list(range(700, 706))
        fresh = runner.forward([SeqChunk(1, shared + new_tail, 0)])[0].clone()
        reused = continue_after(runner, 0, shared + old_tail, len(shared), new_tail)
        assert int(reused.argmax()) == int(fresh.argmax())
        assert torch.corrcoef(torch.stack([reused, fresh]))[0, 1] > 0.999


@pytest.mark.slow  # the real SmolLM2 GGUF on llama.cpp (tests/engine/conftest.py's gguf_path)
@pytest.mark.llamacpp
def test_multi_turn_chat_reuses_the_conversation(gguf_path: Path) -> None:
    from qwen_stream.api import ChatModel

    model = ChatModel.load(str(gguf_path), context_length=512, max_batch_size=2, threads=1, progress=False)
    try:
        answer, history = model.chat("What is the capital of France?", history=None, temperature=0.0,
                                     max_new_tokens=12)
        before = model.engine.stats().reused_prompt_tokens
        prompt_two = model.inputs.prompter.build(
            [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": answer},
             {"role": "user", "content": "And of Italy?"}], max_prompt_tokens=400).ids
        second, _ = model.chat("And of Italy?", history=history, temperature=0.0, max_new_tokens=12)
        reused = model.engine.stats().reused_prompt_tokens - before
        assert second.strip()
        # at least the system prompt and the first question came from the slot's KV, not a new prefill
        assert 20 <= reused < len(prompt_two)
    finally:
        model.close()
