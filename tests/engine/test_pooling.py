"""Pooled requests in the core (engine/pooling.py, step.py, loop.py): what they pool, how they end, and that they
never change a stream's tokens, on a scripted runner whose hidden states are known exactly (support/pooling_runner)."""

from __future__ import annotations

import queue
import threading

import numpy as np
import pytest
import torch

from qwen_stream.engine.loop import Engine
from qwen_stream.engine.pooling import Pooler, check_task, runner_tasks, score_vector
from qwen_stream.errors import ContextLengthError, UnsupportedTaskError
from qwen_stream.types import FinishReason, PoolingParams, SamplingParams, TokenOutput
from tests.support.pooling_runner import WIDTH, PoolingRunner, TextOnlyRunner, hidden_row

GREEDY = SamplingParams(max_new_tokens=6, temperature=0.0)


def pooled(pooling: str = "mean", normalize: bool = False, logits_of: tuple[int, ...] = ()) -> SamplingParams:
    return SamplingParams(max_new_tokens=1, temperature=0.0,
                          pooling=PoolingParams(pooling, normalize, logits_of=logits_of))


def run(engine: Engine, prompt: list[int], params: SamplingParams) -> list[TokenOutput]:
    outputs: queue.SimpleQueue[TokenOutput] = queue.SimpleQueue()
    engine.submit(prompt, params, outputs.put)
    seen = []
    while not seen or seen[-1].finish_reason is None:
        seen.append(outputs.get(timeout=30))
    return seen


def expected(prompt: list[int], pooling: str) -> np.ndarray:
    rows = np.array([hidden_row(t, p) for p, t in enumerate(prompt)], dtype=np.float64)
    return {"mean": rows.mean(axis=0), "cls": rows[0], "last": rows[-1]}[pooling].astype(np.float32)


@pytest.fixture
def engine() -> Engine:
    built = Engine(PoolingRunner(max_slots=4), eos_token_ids=[0], max_running=4, prefill_chunk=8)
    yield built
    built.shutdown()


# ---- the pure parts ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_a_pooler_fed_in_chunks_pools_as_one_read_whole(pooling: str) -> None:
    rows = torch.randn(37, 16)
    whole, chunked = Pooler(PoolingParams(pooling, False)), Pooler(PoolingParams(pooling, False))
    whole.add(rows, 0)
    for start in range(0, 37, 8):
        chunked.add(rows[start:start + 8], start)
    assert np.array_equal(whole.result(), chunked.result())
    reference = {"mean": rows.double().mean(0).float(), "cls": rows[0], "last": rows[-1]}[pooling].numpy()
    np.testing.assert_allclose(whole.result(), reference, rtol=0, atol=1e-6)


def test_normalised_vectors_have_unit_length_and_broken_states_are_refused() -> None:
    pooler = Pooler(PoolingParams("last", True))
    pooler.add(torch.tensor([[3.0, 4.0]]), 0)
    vector = pooler.result()
    assert vector.dtype == np.float32 and np.allclose(vector, [0.6, 0.8])
    broken = Pooler(PoolingParams("mean", True))
    broken.add(torch.tensor([[float("nan"), 1.0]]), 0)
    with pytest.raises(ValueError, match="not finite"):
        broken.result()


def test_a_score_reads_the_asked_logits_in_order() -> None:
    row = torch.arange(10, dtype=torch.float32)
    assert score_vector(row, (7, 2)).tolist() == [7.0, 2.0]
    with pytest.raises(ValueError, match="past the model"):
        score_vector(row, (10,))


def test_what_a_runner_serves_decides_what_is_refused() -> None:
    assert runner_tasks(PoolingRunner()) == {"generate", "embed", "score"}
    assert runner_tasks(TextOnlyRunner()) == {"generate", "score"}
    with pytest.raises(UnsupportedTaskError) as refused:
        check_task(pooled(), runner_tasks(TextOnlyRunner()), "scripted")
    assert refused.value.code == "embeddings_unsupported"
    with pytest.raises(UnsupportedTaskError) as refused:
        check_task(GREEDY, frozenset({"embed"}), "encoder")
    assert refused.value.code == "model_not_generative"


# ---- through the engine -----------------------------------------------------------------------------------


@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_a_pooled_request_ends_with_one_output_holding_its_vector(engine: Engine, pooling: str) -> None:
    prompt = [(5 * i + 3) % 60 + 1 for i in range(21)]  # three chunks of at most 8
    outputs = run(engine, prompt, pooled(pooling))
    assert len(outputs) == 1
    out = outputs[0]
    assert out.finish_reason is FinishReason.STOP and out.new_token_ids == [] and out.error is None
    assert out.num_prompt_tokens == 21 and out.embedding is not None and out.embedding.shape == (WIDTH,)
    np.testing.assert_allclose(out.embedding, expected(prompt, pooling), rtol=0, atol=1e-5)
    chunks = [c for batch in engine.runner.batches for c in batch]
    assert [len(c.token_ids) for c in chunks] == [8, 8, 5] and all(c.hidden and not c.want_logits for c in chunks)


def test_a_score_request_ends_with_the_asked_logits_of_its_last_position(engine: Engine) -> None:
    out = run(engine, [4, 5, 6], pooled(logits_of=(7, 8, 1)))[-1]
    assert out.finish_reason is FinishReason.STOP and out.embedding is not None
    assert out.embedding.tolist() == [10.0, 0.0, 0.0]  # the scripted model's next token after 6 is 7


def test_a_pooled_prompt_may_fill_the_window_and_no_more() -> None:
    built = Engine(PoolingRunner(max_slots=2, max_seq_len=16), eos_token_ids=[0], max_running=2)
    try:
        assert run(built, list(range(1, 17)), pooled())[-1].embedding is not None  # a chat prompt would need room
        with pytest.raises(ContextLengthError):
            built.submit(list(range(1, 18)), pooled(), lambda out: None)
        with pytest.raises(ContextLengthError):
            built.submit(list(range(1, 17)), GREEDY, lambda out: None)
    finally:
        built.shutdown()


def test_a_backend_without_hidden_states_refuses_embeddings_at_submit() -> None:
    built = Engine(TextOnlyRunner(max_slots=2), eos_token_ids=[0], max_running=2)
    try:
        with pytest.raises(UnsupportedTaskError):
            built.submit([1, 2, 3], pooled(), lambda out: None)
        assert run(built, [1, 2, 3], pooled(logits_of=(4,)))[-1].embedding.tolist() == [10.0]  # scores still work
    finally:
        built.shutdown()


def test_streams_get_the_same_tokens_beside_a_flood_of_pooled_requests(engine: Engine) -> None:
    alone = [t for out in run(engine, [10, 11], GREEDY) for t in out.new_token_ids]
    results: dict[int, list[TokenOutput]] = {}

    def embed(i: int) -> None:  # embeddings and scores (whose logits rows sit between the streams' rows)
        params = pooled("mean") if i % 2 else pooled(logits_of=(2, 1))
        results[i] = run(engine, [(i + j) % 60 + 1 for j in range(30)], params)

    threads = [threading.Thread(target=embed, args=(i,)) for i in range(12)]
    for thread in threads:
        thread.start()
    beside = [t for out in run(engine, [10, 11], GREEDY) for t in out.new_token_ids]
    for thread in threads:
        thread.join(30)
    assert alone == beside == [12, 13, 14, 15, 16, 17]
    for i, outputs in results.items():
        prompt = [(i + j) % 60 + 1 for j in range(30)]
        want = expected(prompt, "mean") if i % 2 else [10.0 * (prompt[-1] + 1 == 2), 10.0 * (prompt[-1] + 1 == 1)]
        np.testing.assert_allclose(outputs[-1].embedding, want, rtol=0, atol=1e-5)


def test_an_aborted_pooled_request_ends_with_abort_and_frees_its_slot() -> None:
    built = Engine(PoolingRunner(max_slots=1, step_delay=0.05), eos_token_ids=[0], max_running=1, prefill_chunk=2)
    try:
        outputs: queue.SimpleQueue[TokenOutput] = queue.SimpleQueue()
        request_id = built.submit(list(range(1, 40)), pooled(), outputs.put)
        built.abort(request_id)
        assert outputs.get(timeout=10).finish_reason is FinishReason.ABORT
        assert run(built, [1, 2, 3], pooled("last"))[-1].embedding is not None  # the one slot is free again
    finally:
        built.shutdown()
