"""Same request, same seed, same answer, whether its prompt came from the prefix cache or not (issue 10).

An exact repeat samples its first token from the logits row the cold run computed (kept with the slot's KV), and
decodes on the same KV, so its tokens and logprobs are equal bit for bit, with no prefill at all (recomputing
the last token alone had moved them by ~1e-6, and a seeded sample flipped now and then)."""

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


def sampled(engine: Engine, prompt: list[int], seed: int) -> tuple[list[int], list[float]]:
    outputs: queue.SimpleQueue[TokenOutput] = queue.SimpleQueue()
    params = SamplingParams(temperature=0.9, seed=seed, max_new_tokens=12, logprobs=0, ignore_eos=True)
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
