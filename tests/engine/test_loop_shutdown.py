"""Shutting the engine down while a step still runs (a long prefill on a busy machine): the model is released by
the loop once that step is over, never freed under it (llama.cpp would crash the process)."""

from __future__ import annotations

import time

from qwen_stream.engine.loop import Engine
from qwen_stream.types import PoolingParams, SamplingParams
from tests.support.pooling_runner import PoolingRunner


def test_a_shutdown_that_times_out_leaves_the_model_to_the_loop() -> None:
    runner = PoolingRunner(max_slots=1, step_delay=1.0)
    engine = Engine(runner, eos_token_ids=[0], max_running=1)
    engine.submit([1, 2, 3], SamplingParams(max_new_tokens=1, pooling=PoolingParams("last")), lambda out: None)
    time.sleep(0.2)  # the step (1 s) has started
    engine.shutdown(timeout=0.05)
    assert not runner.closed  # still computing: not freed under the step
    deadline = time.monotonic() + 10
    while not runner.closed and time.monotonic() < deadline:
        time.sleep(0.02)
    assert runner.closed and not engine.is_alive()


def test_a_shutdown_in_time_releases_the_model_itself() -> None:
    runner = PoolingRunner(max_slots=1)
    engine = Engine(runner, eos_token_ids=[0], max_running=1)
    engine.shutdown()
    assert runner.closed
