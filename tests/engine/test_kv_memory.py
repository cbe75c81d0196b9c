"""KV memory sized to the work: a shared budget in the engine, llama.cpp's unified pool and q8_0 cache, and the
PyTorch cache that grows with the longest sequence."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import torch

from qwen_stream.engine.loop import Engine, wait_idle
from qwen_stream.engine.runners.base import SeqChunk
from qwen_stream.engine.runners.torch_native import build_torch_runner
from qwen_stream.types import SamplingParams, TokenOutput
from tests.support.scripted_runners import RewindingRunner
from tests.support.tiny_models import qwen2, tokens


class BudgetRunner(RewindingRunner):
    """The scripted runner with one pool of ``kv_budget`` cells; fails a step that would overflow it."""

    def __init__(self, kv_budget: int, max_slots: int = 4) -> None:
        super().__init__(max_slots=max_slots, max_seq_len=kv_budget)
        self.kv_budget = kv_budget
        self.peak = 0

    def forward(self, chunks: Any) -> torch.Tensor:
        rows = super().forward(chunks)
        held = sum(len(h) for h in self.held.values())
        self.peak = max(self.peak, held)
        if held > self.kv_budget:
            raise RuntimeError(f"{held} cells in use, over the budget of {self.kv_budget}")
        return rows


def submit_all(engine: Engine, prompts: list[list[int]], params: SamplingParams) -> list[list[int]]:
    results: list[list[int]] = [[] for _ in prompts]
    done = threading.Event()
    left = [len(prompts)]
    lock = threading.Lock()

    def sink_for(i: int) -> Any:
        def sink(out: TokenOutput) -> None:
            results[i].extend(out.new_token_ids)
            assert out.error is None, out.error
            if out.finish_reason is not None:
                with lock:
                    left[0] -= 1
                    if left[0] == 0:
                        done.set()
        return sink

    for i, prompt in enumerate(prompts):
        engine.submit(prompt, params, sink_for(i))
    assert done.wait(180)  # a busy 2-core machine runs these 4 x 24 tokens in well under a minute, idle
    assert wait_idle(engine)
    return results


def test_requests_share_the_budget_and_wait_for_room() -> None:
    runner = BudgetRunner(kv_budget=64)
    engine = Engine(runner, eos_token_ids=[0], max_running=4)
    params = SamplingParams(temperature=0.0, max_new_tokens=20, ignore_eos=True)
    prompts = [[1 + i] * 10 for i in range(4)]  # each reserves 10 + 20 = 30 cells: two run at a time
    try:
        results = submit_all(engine, prompts, params)
    finally:
        engine.shutdown()
    assert all(len(r) == 20 for r in results)
    assert runner.peak <= 64


def test_idle_caches_are_evicted_least_recently_used_first() -> None:
    runner = BudgetRunner(kv_budget=64)
    engine = Engine(runner, eos_token_ids=[0], max_running=4)
    params = SamplingParams(temperature=0.0, max_new_tokens=10, ignore_eos=True)
    try:
        for first in (1, 2):  # two finished conversations stay cached: 20 cells each
            submit_all(engine, [[first] * 10], params)
        assert sum(1 for h in runner.held.values() if h) == 2
        submit_all(engine, [[7] * 30], params)  # needs 40: only the older cache (prompt of 1s) must go
    finally:
        engine.shutdown()
    kept = [h[0] for h in runner.held.values() if h]
    assert 2 in kept and 1 not in kept
    assert runner.peak <= 64


def test_growing_cache_keeps_what_it_holds() -> None:
    """A slot filled while the cache held 256 positions continues correctly after it grew to 512."""
    model = qwen2()
    runner = build_torch_runner(model, max_slots=2, max_seq_len=1024)
    prompt, more = tokens(200, seed=1), tokens(100, seed=2)
    runner.forward([SeqChunk(0, prompt, 0, want_logits=False)])
    assert runner._cache.capacity == 256
    grown = runner.forward([SeqChunk(0, more, len(prompt))]).clone()
    assert runner._cache.capacity == 512
    runner.free_slot(0)
    expected = runner.forward([SeqChunk(1, prompt + more, 0)]).clone()  # computed in one go, no growth between
    assert torch.allclose(grown, expected, atol=1e-4)


def test_the_torch_cache_starts_small() -> None:
    runner = build_torch_runner(qwen2(), max_slots=4, max_seq_len=2048)
    before = runner.kv_cache_bytes
    runner.forward([SeqChunk(0, tokens(300, seed=3), 0)])
    assert runner.kv_cache_bytes == 2 * before  # 256 -> 512 positions, not 2048
    assert runner._cache.capacity == 512


@pytest.mark.slow  # the real SmolLM2 GGUF on llama.cpp (tests/engine/conftest.py's gguf_path)
@pytest.mark.llamacpp
@pytest.mark.parametrize("kv_type", [None, "q8_0"])
def test_llama_cpp_pool_serves_concurrent_streams(gguf_path: Path, kv_type: str | None) -> None:
    from qwen_stream.engine.runners.llamacpp import LlamaCppRunner

    runner = LlamaCppRunner(gguf_path, max_slots=4, max_seq_len=512, threads=1, kv_budget=256, kv_type=kv_type)
    assert runner.max_seq_len == 256  # no request can need more than the whole pool
    prompts = [list(range(300 + 10 * i, 340 + 10 * i)) for i in range(4)]
    together = runner.forward([SeqChunk(i, p, 0) for i, p in enumerate(prompts)]).clone()
    for slot in range(4):
        runner.free_slot(slot)
    alone = torch.stack([runner.forward([SeqChunk(0, p, 0)])[0].clone() for p in prompts if not runner.free_slot(0)])
    for a, b in zip(together, alone, strict=True):  # the same distributions; a near-tie may flip an argmax
        assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.995
    engine = Engine(runner, eos_token_ids=[], max_running=4)
    params = SamplingParams(temperature=0.0, max_new_tokens=24, ignore_eos=True)
    try:
        results = submit_all(engine, prompts, params)  # 4 x 64 cells: all four run at once in the 256-cell pool
    finally:
        engine.shutdown()
    assert all(len(r) == 24 for r in results)


@pytest.mark.slow  # the real SmolLM2 GGUF on llama.cpp (tests/engine/conftest.py's gguf_path)
@pytest.mark.llamacpp
def test_chat_model_uses_one_window_by_default(gguf_path: Path) -> None:
    from qwen_stream.api import ChatModel

    model = ChatModel.load(str(gguf_path), runner="llamacpp", context_length=512, progress=False)
    try:
        assert model.runner is not None and getattr(model.runner, "kv_budget", None) == 512
        answer, _ = model.chat("Say hi.", max_new_tokens=8, temperature=0)
        assert answer
    finally:
        model.close()
