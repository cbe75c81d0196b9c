"""Faults injected into a running engine: a forward that raises, NaN logits for one request, a sink that raises, a
step that hangs and a loop that dies. Only the requests concerned fail; the loop lives and ``health()`` tells the
truth. The "model" is a rule (next token = last token + 1), so every correct answer is known exactly."""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Sequence

import pytest
import torch

from qwen_stream.engine.loop import Engine, wait_idle
from qwen_stream.engine.runners.base import SeqChunk
from qwen_stream.errors import EngineError
from qwen_stream.types import FinishReason, SamplingParams, TokenOutput

VOCAB = 64
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=6)


class FaultyRunner:
    """Next token = last token + 1, with faults on demand: ``fail_forward`` raises in the next forward,
    ``nan_for_token`` gives NaN logits to rows whose last fed token is that id, ``delay`` sleeps in forward."""

    name = "faulty"
    vocab_size = VOCAB
    max_slots = 4
    max_seq_len = 64

    def __init__(self) -> None:
        self.fail_forward = 0
        self.nan_for_token: int | None = None
        self.delay = 0.0

    def forward(self, chunks: Sequence[SeqChunk]) -> torch.Tensor:
        if self.delay:
            time.sleep(self.delay)
        if self.fail_forward:
            self.fail_forward -= 1
            raise RuntimeError("injected forward failure")
        rows = [c for c in chunks if c.want_logits]
        logits = torch.zeros(len(rows), VOCAB)
        for i, chunk in enumerate(rows):
            last = chunk.token_ids[-1]
            logits[i, (last + 1) % VOCAB] = 10.0
            if last == self.nan_for_token:
                logits[i, 3] = float("nan")
        return logits

    def free_slot(self, slot: int) -> None:
        pass

    def close(self) -> None:
        pass


def collect(engine: Engine, prompt: list[int], params: SamplingParams = GREEDY,
            sink_wrapper: Callable[[Callable[[TokenOutput], None]], Callable[[TokenOutput], None]] | None = None,
            ) -> queue.SimpleQueue[TokenOutput]:
    outputs: queue.SimpleQueue[TokenOutput] = queue.SimpleQueue()
    sink = outputs.put if sink_wrapper is None else sink_wrapper(outputs.put)
    engine.submit(prompt, params, sink)
    return outputs


def drain(outputs: queue.SimpleQueue[TokenOutput], timeout: float = 10.0) -> tuple[list[int], TokenOutput]:
    tokens: list[int] = []
    deadline = time.monotonic() + timeout
    while True:
        out = outputs.get(timeout=max(0.01, deadline - time.monotonic()))
        tokens += out.new_token_ids
        if out.finish_reason is not None:
            return tokens, out


@pytest.fixture()
def runner() -> FaultyRunner:
    return FaultyRunner()


@pytest.fixture()
def engine(runner: FaultyRunner) -> Engine:
    engine = Engine(runner, eos_token_ids=[0], max_running=4, stall_after_s=0.5)
    yield engine
    engine.shutdown()


def test_nan_logits_fail_only_that_request_and_the_batch_finishes(engine: Engine, runner: FaultyRunner) -> None:
    runner.nan_for_token = 40  # the poisoned request is the one whose last token reaches 40
    runner.delay = 0.01  # keep all three in one batch
    poisoned = collect(engine, [38])
    healthy = [collect(engine, [10 * k + 1]) for k in (1, 2)]
    tokens, last = drain(poisoned)
    assert last.error is not None and "NaN" in last.error and last.finish_reason is FinishReason.ABORT
    assert tokens == [39, 40]  # it got its tokens up to the poisoned step, then a clean end
    for k, outputs in zip((1, 2), healthy, strict=True):
        tokens, last = drain(outputs)
        assert last.error is None and tokens == [10 * k + 2 + i for i in range(6)]
    assert wait_idle(engine) and engine.health().ok


def test_a_failed_forward_ends_its_step_and_the_loop_goes_on(engine: Engine, runner: FaultyRunner) -> None:
    runner.fail_forward = 1
    tokens, last = drain(collect(engine, [5]))
    assert tokens == [] and last.error is not None and "injected" in last.error
    tokens, last = drain(collect(engine, [5]))  # the next request is served normally
    assert last.error is None and tokens == [6, 7, 8, 9, 10, 11]
    assert engine.health().ok


def test_a_scheduling_failure_while_admitting_ends_that_request_too(engine: Engine,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # A bug between taking a request from the queue and running it (here: the slot hand-over raises once) must not
    # leave the request in neither list, waiting forever: it ends with the error and the next one is served.
    scheduler = engine.core.scheduler
    real = scheduler._take_slot
    calls = []

    def broken_once(seq: object, *args: object) -> None:
        calls.append(seq)
        if len(calls) == 1:
            raise AttributeError("injected admission failure")
        real(seq, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(scheduler, "_take_slot", broken_once)
    tokens, last = drain(collect(engine, [5]))
    assert tokens == [] and last.error is not None and "injected admission failure" in last.error
    tokens, last = drain(collect(engine, [5]))
    assert last.error is None and tokens == [6, 7, 8, 9, 10, 11]
    assert engine.health().ok


def test_a_sink_that_raises_aborts_only_its_request(engine: Engine, runner: FaultyRunner) -> None:
    runner.delay = 0.01

    def exploding(put: Callable[[TokenOutput], None]) -> Callable[[TokenOutput], None]:
        def sink(out: TokenOutput) -> None:
            put(out)
            raise RuntimeError("the consumer went away")
        return sink

    broken = collect(engine, [20], sink_wrapper=exploding)
    fine = collect(engine, [30])
    tokens, last = drain(fine)
    assert last.error is None and tokens == [31, 32, 33, 34, 35, 36]
    assert wait_idle(engine)
    first = broken.get(timeout=5)
    assert first.new_token_ids == [21]  # it got one output, then was aborted
    assert engine.health().ok


def test_a_stuck_step_shows_as_stalled_then_recovers(engine: Engine, runner: FaultyRunner) -> None:
    runner.delay = 1.2  # > stall_after_s (0.5)
    outputs = collect(engine, [1], GREEDY.with_(max_new_tokens=1))
    time.sleep(0.9)
    health = engine.health()
    assert health.status == "stalled" and health.heartbeat_age_s > 0.5
    runner.delay = 0.0
    drain(outputs)
    time.sleep(0.1)
    assert engine.health().ok


def test_an_unexpected_loop_failure_is_recorded_and_every_request_ends(engine: Engine, runner: FaultyRunner) -> None:
    runner.delay = 0.05
    running = collect(engine, [1], GREEDY.with_(max_new_tokens=50))
    running.get(timeout=5)  # it is running

    def broken(*_: object) -> object:
        raise RuntimeError("injected bug outside every guard")

    engine.core.step = broken  # type: ignore[method-assign]
    engine.core.fail_running = broken  # type: ignore[method-assign]  # the step guard itself fails
    _, last = drain(running)
    assert last.error is not None and "injected bug" in last.error
    health = engine.health()
    assert health.status == "dead" and "injected bug" in (health.detail or "")
    with pytest.raises(EngineError, match="failed"):
        engine.submit([1], GREEDY, lambda out: None)
