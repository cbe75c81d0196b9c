"""The client side of pooled jobs (client/pooled.py, client/vectors.py): thousands of inputs through a small engine
queue without a refusal, results in input order, cancellation that aborts the rest, and the vector math (dimensions,
P("yes"), cosine ranking). A real Engine over the scripted pooling runner; no model."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from qwen_stream.client.pooled import arun_pooled, run_pooled
from qwen_stream.client.vectors import cosine, embeddings, matryoshka, ranking, yes_probability
from qwen_stream.engine.loop import Engine, wait_idle
from qwen_stream.errors import EngineOverloadedError
from qwen_stream.inputs.pooled_request import EmbeddingJob, RankingJob
from qwen_stream.inputs.request import EngineRequest, PromptInfo
from qwen_stream.types import PoolingParams, SamplingParams, TokenOutput
from tests.support.pooling_runner import PoolingRunner

LAST = SamplingParams(max_new_tokens=1, temperature=0.0, pooling=PoolingParams("last", normalize=False))
SLOW = SamplingParams(max_new_tokens=50, temperature=0.0, ignore_eos=True)


def request(i: int) -> EngineRequest:
    ids = [(i % 60) + 1, (i % 7) + 1]
    return EngineRequest(ids, LAST, PromptInfo(len(ids)), prompt_index=i)


def small_engine(step_delay: float = 0.0) -> Engine:
    return Engine(PoolingRunner(max_slots=2, step_delay=step_delay), eos_token_ids=[0], max_running=2,
                  max_waiting=2)


def test_many_inputs_pass_a_small_queue_without_a_refusal_and_come_back_in_order() -> None:
    engine = small_engine()
    try:
        requests = [request(i) for i in range(60)]  # 15 times what the engine queues
        outputs = run_pooled(engine, requests)
        assert [out.embedding[0] for out in outputs] == [float((i % 7) + 1) for i in range(60)]  # last token's row
        assert [out.embedding[1] for out in outputs] == [1.0] * 60  # its position
        assert wait_idle(engine)
    finally:
        engine.shutdown()


def test_a_queue_full_of_other_requests_is_a_refusal_and_leaves_nothing_behind() -> None:
    engine = small_engine(step_delay=0.02)
    try:
        for _ in range(4):  # two running, two waiting: the queue is full
            engine.submit([1, 2], SLOW, lambda out: None)
        with pytest.raises(EngineOverloadedError):
            run_pooled(engine, [request(i) for i in range(5)])
        assert engine.num_unfinished == 4  # only the others
        engine.abort_all()
    finally:
        engine.shutdown()


def test_cancelling_an_async_run_aborts_what_it_has_in_flight() -> None:
    engine = small_engine(step_delay=0.05)

    async def cancel_midway() -> None:
        long = [EngineRequest(list(range(1, 60)), LAST, PromptInfo(59), prompt_index=i) for i in range(8)]
        task = asyncio.ensure_future(arun_pooled(engine, long, window=3))
        await asyncio.sleep(0.1)
        assert engine.num_unfinished == 3
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    try:
        asyncio.run(cancel_midway())
        deadline = time.monotonic() + 5
        while engine.num_unfinished and time.monotonic() < deadline:
            time.sleep(0.01)
        assert engine.num_unfinished == 0
    finally:
        engine.shutdown()


def out(vector: list[float]) -> TokenOutput:
    return TokenOutput("r", [], embedding=np.array(vector, dtype=np.float32))


def test_dimensions_keep_the_first_values_at_unit_length() -> None:
    vectors = np.array([[3.0, 4.0, 12.0], [0.0, 0.0, 1.0]], dtype=np.float32)
    cut = matryoshka(vectors, 2)
    assert cut.dtype == np.float32 and np.allclose(cut, [[0.6, 0.8], [0.0, 0.0]])  # a zero row stays zero
    job = EmbeddingJob([request(0), request(1)], dimensions=2)
    result = embeddings(job, [out([3, 4, 12]), out([1, 0, 0])])
    assert result.vectors.shape == (2, 2) and result.prompt_tokens == [2, 2] and result.total_tokens == 4


def test_a_judges_logits_become_p_yes_and_rankings_sort_best_first() -> None:
    assert yes_probability(np.array([0.0, 0.0])) == 0.5
    assert yes_probability(np.array([-30.0, 30.0])) > 0.999999
    judged = RankingJob([request(i) for i in range(3)], "judge", [], top_n=2)
    result = ranking(judged, [out([1, 0]), out([0, 3]), out([0, 1])])
    assert [r.index for r in result.results] == [1, 2] and result.prompt_tokens == 6
    in_order = RankingJob([request(i) for i in range(3)], "judge", [], sort=False)
    assert [r.index for r in ranking(in_order, [out([1, 0]), out([0, 3]), out([0, 1])]).results] == [0, 1, 2]
    cosined = RankingJob([request(i) for i in range(3)], "cosine", [(0, 1), (0, 2)])
    result = ranking(cosined, [out([1, 0]), out([0, 1]), out([1, 1])])
    assert [r.index for r in result.results] == [1, 0]
    assert result.results[0].score == pytest.approx(cosine(np.array([1.0, 0.0]), np.array([1.0, 1.0])))
