"""Same request, same seed, same answer, whether its prompt came from the prefix cache or not (issues 10, 26).

An exact repeat samples its first token from the logits row the cold run computed (kept with the slot's KV), and
decodes on the same KV, so its tokens and logprobs are equal bit for bit, with no prefill at all (recomputing
the last token alone had moved them by ~1e-6, and a seeded sample flipped now and then).

Whatever else the cache holds (any partial prefix of the prompt, followed by other tokens and a decoded answer), a
request with a seed of its own gets the cold answer bit for bit too: chunks are cut at fixed positions and only
whole chunks computed cold are reused (engine/sched/chunk_grid.py). Checked on both runners: PyTorch on the tiny
model, llama.cpp on the real SmolLM2 GGUF; before, llama.cpp's answers differed for most partial prefixes."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qwen_stream.engine.loop import Engine
from qwen_stream.types import SamplingParams, TokenOutput


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> Iterator[Engine]:
    from qwen_stream.client.loaded_model import load_components
    from qwen_stream.engine.config import EngineConfig

    config = EngineConfig(runner="torch", max_batch_size=2, context_length=512)
    parts = load_components(str(tiny_model_dir), config, progress=False)
    engine = Engine(parts.runner, eos_token_ids=parts.eos_token_ids, max_running=2, prefill_chunk=16)
    yield engine
    engine.shutdown()


def sampled(engine: Engine, prompt: list[int], seed: int | None, new_tokens: int = 12
            ) -> tuple[list[int], list[float]]:
    outputs: queue.SimpleQueue[TokenOutput] = queue.SimpleQueue()
    params = SamplingParams(temperature=0.9 if seed is not None else 0.0, seed=seed, max_new_tokens=new_tokens,
                            logprobs=0, ignore_eos=True)
    engine.submit(prompt, params, outputs.put)
    tokens: list[int] = []
    logprobs: list[float] = []
    while True:
        out = outputs.get(timeout=60)
        tokens += out.new_token_ids
        logprobs += [entry.logprob for entry in out.logprobs or []]
        if out.finish_reason is not None:
            return tokens, logprobs


@pytest.mark.parametrize("length", [5, 16, 40, 77])
def test_an_exact_repeat_served_from_the_cache_is_bit_identical(engine: Engine, length: int) -> Any:
    prompt = [(1000 + 37 * i) % 5000 + 100 for i in range(length)]
    engine.reset_prefix_cache()
    cold = sampled(engine, prompt, seed=length)
    reused_before = engine.stats().reused_prompt_tokens
    repeat = sampled(engine, prompt, seed=length)
    assert repeat == cold  # every token and every logprob, exactly
    assert engine.stats().reused_prompt_tokens - reused_before == length  # the whole prompt: nothing computed


def every_partial_prefix(engine: Engine, prompt: list[int], seed: int) -> list[int]:
    """The cached-prefix lengths k for which the seeded answer to ``prompt`` differs from its cold answer, after a
    request whose prompt shares only its first k tokens (then other tokens, then a decoded answer) ran first."""
    engine.reset_prefix_cache()
    cold = sampled(engine, prompt, seed)
    differ = []
    for k in range(len(prompt) + 1):
        engine.reset_prefix_cache()
        sampled(engine, [*prompt[:k], 7, 8, 9], None, new_tokens=4)  # leaves prompt[:k] + other KV in a slot
        if sampled(engine, prompt, seed) != cold:
            differ.append(k)
    return differ


def next_turn_differs(engine: Engine, first: list[int], seed: int) -> bool:
    """Whether turn 2 of a conversation (turn 1's prompt and answer, then more) answers otherwise with turn 1 still
    in the cache than sent cold: turn 1's answer was decoded one token at a time, never as a cold prefill does."""
    engine.reset_prefix_cache()
    answer, _ = sampled(engine, first, seed)
    second = [*first, *answer, 7, 8, 9]
    warm = sampled(engine, second, seed)
    engine.reset_prefix_cache()
    return sampled(engine, second, seed) != warm


def test_an_own_seed_gets_the_cold_answer_whatever_prefix_the_cache_holds(engine: Engine) -> None:
    prompt = [(300 + 53 * i) % 5000 + 100 for i in range(40)]  # chunks of 16: [0, 16), [16, 32), [32, 40)
    assert every_partial_prefix(engine, prompt, seed=11) == []
    assert not next_turn_differs(engine, prompt, seed=12)


@pytest.mark.slow  # the real SmolLM2 GGUF on llama.cpp (tests/conftest.py's gguf_path)
@pytest.mark.llamacpp
@pytest.mark.parametrize("kv_budget", [None, 512], ids=["slot-streams", "shared-pool"])
def test_an_own_seed_gets_the_cold_answer_whatever_prefix_the_cache_holds_on_llama_cpp(
        gguf_path: Path, kv_budget: int | None) -> None:
    # Both KV layouts: one stream per slot, and the shared pool the engine builds by default, where llama.cpp's
    # numbers also depend on where in the pool a sequence's cells land (slot_pool.py best_match).
    from qwen_stream.engine.runners.llamacpp import LlamaCppRunner

    runner = LlamaCppRunner(gguf_path, max_slots=2, max_seq_len=256, threads=1, kv_budget=kv_budget)
    engine = Engine(runner, eos_token_ids=[0], max_running=2, prefill_chunk=16)
    try:
        prompt = [(300 + 53 * i) % 5000 + 100 for i in range(40)]
        assert every_partial_prefix(engine, prompt, seed=11) == []
        assert [seed for seed in range(4) if next_turn_differs(engine, prompt, seed)] == []
    finally:
        engine.shutdown()
