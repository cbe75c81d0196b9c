"""The engine with a scripted runner: scheduling, batching, finishing and aborting, with no model at all.

The runner's "model" is a rule (next token = last token + 1), so every expected sequence is known exactly.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Sequence

import pytest
import torch

from qwen_stream.engine.loop import Engine, wait_idle
from qwen_stream.engine.runners.base import ModelRunner, SeqChunk
from qwen_stream.errors import EngineOverloadedError
from qwen_stream.types import FinishReason, SamplingParams, TokenOutput
from tests.support.scripted_runners import VOCAB, CountingRunner

EOS = 0


GREEDY = SamplingParams(temperature=0.0, max_new_tokens=5)


def run_to_end(engine: Engine, prompt: list[int], params: SamplingParams = GREEDY) -> list[TokenOutput]:
    outputs: queue.SimpleQueue[TokenOutput] = queue.SimpleQueue()
    engine.submit(prompt, params, outputs.put)
    collected = []
    while True:
        out = outputs.get(timeout=10)
        collected.append(out)
        if out.finish_reason is not None:
            return collected


def tokens(outputs: list[TokenOutput]) -> list[int]:
    return [t for o in outputs for t in o.new_token_ids]


@pytest.fixture
def runner() -> CountingRunner:
    return CountingRunner()


@pytest.fixture
def engine(runner: CountingRunner) -> Engine:
    eng = Engine(runner, eos_token_ids=[EOS], max_running=4, max_waiting=8)
    yield eng
    eng.shutdown()


def test_max_new_tokens_finishes_with_length(engine: Engine) -> None:
    outputs = run_to_end(engine, [10, 11, 12])
    assert tokens(outputs) == [13, 14, 15, 16, 17]
    assert outputs[-1].finish_reason is FinishReason.LENGTH
    assert outputs[0].num_prompt_tokens == 3


def test_eos_finishes_with_stop_and_is_not_emitted(engine: Engine) -> None:
    outputs = run_to_end(engine, [VOCAB - 3], GREEDY.with_(max_new_tokens=20))
    assert tokens(outputs) == [VOCAB - 2, VOCAB - 1]  # then 0 == EOS, never shown
    assert outputs[-1].finish_reason is FinishReason.STOP


def test_ignore_eos_and_extra_stop_ids(engine: Engine) -> None:
    assert tokens(run_to_end(engine, [VOCAB - 2], GREEDY.with_(ignore_eos=True, max_new_tokens=3))) == [VOCAB - 1, 0, 1]
    outputs = run_to_end(engine, [5], GREEDY.with_(stop_token_ids=(8,), max_new_tokens=10))
    assert tokens(outputs) == [6, 7] and outputs[-1].finish_reason is FinishReason.STOP


def test_context_window_finishes_with_length(runner: CountingRunner) -> None:
    eng = Engine(runner, eos_token_ids=[EOS], max_running=2, max_model_len=8)
    try:
        outputs = run_to_end(eng, [1, 2, 3, 4, 5], GREEDY.with_(max_new_tokens=100))
        assert tokens(outputs) == [6, 7, 8]
        assert outputs[-1].finish_reason is FinishReason.LENGTH
        with pytest.raises(ValueError, match="context window"):
            eng.submit(list(range(1, 9)), GREEDY, lambda out: None)
    finally:
        eng.shutdown()


def test_concurrent_requests_decode_in_one_batch(runner: CountingRunner) -> None:
    runner.step_delay = 0.002
    eng = Engine(runner, eos_token_ids=[EOS], max_running=4)
    try:
        results: dict[int, list[int]] = {}

        def client(start: int) -> None:
            results[start] = tokens(run_to_end(eng, [start], GREEDY.with_(max_new_tokens=8)))

        threads = [threading.Thread(target=client, args=(10 * i + 1,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for start, got in results.items():
            assert got == [start + k for k in range(1, 9)]
        assert max(len(b) for b in runner.batches) == 4  # all four decoded in the same step at some point
    finally:
        eng.shutdown()


def test_more_requests_than_slots_wait_then_run(engine: Engine, runner: CountingRunner) -> None:
    sinks = [queue.SimpleQueue() for _ in range(7)]
    for i, sink in enumerate(sinks):
        engine.submit([i + 1], GREEDY.with_(max_new_tokens=3), sink.put)
    for i, sink in enumerate(sinks):
        got: list[int] = []
        while True:
            out = sink.get(timeout=10)
            got += out.new_token_ids
            if out.finish_reason:
                break
        assert got == [i + 2, i + 3, i + 4]
    assert all(len({c.slot for c in batch}) == len(batch) for batch in runner.batches)
    assert max(len(b) for b in runner.batches) <= 4
    assert wait_idle(engine)
    assert engine.stats().free_slots == 4


def test_queue_limit_refuses_at_once(runner: CountingRunner) -> None:
    runner.step_delay = 0.01
    eng = Engine(runner, eos_token_ids=[EOS], max_running=1, max_waiting=1)
    try:
        long = GREEDY.with_(max_new_tokens=50, ignore_eos=True)
        eng.submit([1], long, lambda out: None)
        eng.submit([2], long, lambda out: None)
        with pytest.raises(EngineOverloadedError) as info:
            eng.submit([3], long, lambda out: None)
        assert info.value.retry_after_s > 0
    finally:
        eng.shutdown()


def test_abort_frees_slot_within_a_step_and_is_idempotent(runner: CountingRunner) -> None:
    runner.step_delay = 0.005
    eng = Engine(runner, eos_token_ids=[EOS], max_running=2)
    try:
        outputs: queue.SimpleQueue[TokenOutput] = queue.SimpleQueue()
        rid = eng.submit([1], GREEDY.with_(max_new_tokens=10_000, ignore_eos=True), outputs.put)
        outputs.get(timeout=10)
        eng.abort(rid)
        eng.abort(rid)
        last = outputs.get(timeout=10)
        while last.finish_reason is None:
            last = outputs.get(timeout=10)
        assert last.finish_reason is FinishReason.ABORT
        assert wait_idle(eng)
        assert runner.freed == [0]
        steps_after = len(runner.batches)
        time.sleep(0.05)
        assert len(runner.batches) == steps_after  # nothing runs for the aborted request any more
        eng.abort(rid)  # after the end: still harmless
        eng.abort("never-existed")
    finally:
        eng.shutdown()


def test_long_prompt_is_prefilled_in_chunks(runner: CountingRunner) -> None:
    runner.max_seq_len = 2048
    eng = Engine(runner, eos_token_ids=[EOS], max_running=2, prefill_chunk=512)
    try:
        prompt = [1 + (i % 50) for i in range(1200)]
        outputs = run_to_end(eng, prompt, GREEDY.with_(max_new_tokens=2))
        assert tokens(outputs) == [prompt[-1] + 1, prompt[-1] + 2]
        prefill_sizes = [len(c.token_ids) for b in runner.batches for c in b if len(c.token_ids) > 1]
        assert prefill_sizes == [512, 512, 176]
    finally:
        eng.shutdown()


def test_failed_step_ends_requests_with_error_and_engine_survives() -> None:
    class BrokenRunner(CountingRunner):
        def forward(self, chunks: Sequence[SeqChunk]) -> torch.Tensor:
            if any(c.token_ids[0] == 13 for c in chunks):
                raise RuntimeError("boom")
            return super().forward(chunks)

    eng = Engine(BrokenRunner(), eos_token_ids=[EOS])
    try:
        failed = run_to_end(eng, [13])
        assert failed[-1].finish_reason is FinishReason.ABORT and "boom" in (failed[-1].error or "")
        assert wait_idle(eng)
        assert tokens(run_to_end(eng, [1])) == [2, 3, 4, 5, 6]  # the engine keeps serving
    finally:
        eng.shutdown()


def test_submit_validation(engine: Engine) -> None:
    with pytest.raises(ValueError, match="empty"):
        engine.submit([], GREEDY, lambda out: None)


def test_runner_protocol_is_satisfied() -> None:
    assert isinstance(CountingRunner(), ModelRunner)


def test_abort_all_stops_every_request(runner: CountingRunner) -> None:
    runner.step_delay = 0.005
    eng = Engine(runner, eos_token_ids=[EOS], max_running=2, max_waiting=4)
    try:
        sinks: list[queue.SimpleQueue[TokenOutput]] = [queue.SimpleQueue() for _ in range(3)]
        for sink in sinks:  # two run, one waits for a slot
            eng.submit([1], GREEDY.with_(max_new_tokens=10_000, ignore_eos=True), sink.put)
        sinks[0].get(timeout=10)
        assert eng.abort_all() == 3
        assert wait_idle(eng)
        for sink in sinks:
            last = sink.get(timeout=10)
            while last.finish_reason is None:
                last = sink.get(timeout=10)
            assert last.finish_reason is FinishReason.ABORT
        assert eng.abort_all() == 0
    finally:
        eng.shutdown()
