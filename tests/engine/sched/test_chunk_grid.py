"""Prefill chunks cut at fixed positions, and a request with a seed of its own reusing only what a cold prefill
computes bit for bit (chunk_grid.py, scheduler.py). Scheduling is checked with the scripted rewinding runner, whose
every fed chunk is recorded; that the numbers then really are a cold run's is tests/reliability/test_determinism.py,
on both real runners."""

from __future__ import annotations

import queue
from collections.abc import Iterator

import pytest

from qwen_stream.engine.loop import Engine, wait_idle
from qwen_stream.engine.request import Sequence
from qwen_stream.engine.sample.per_sequence import SamplingState
from qwen_stream.engine.sched.chunk_grid import ChunkGrid
from qwen_stream.engine.sched.scheduler import Scheduler
from qwen_stream.types import SamplingParams, TokenOutput
from tests.support.scripted_runners import RewindingRunner

DRAWN = SamplingParams(temperature=0.0, max_new_tokens=3, ignore_eos=True, seed=1, seed_drawn=True)
OWN_SEED = SamplingParams(temperature=0.0, max_new_tokens=3, ignore_eos=True, seed=1)


def test_the_grid_cuts_at_multiples_of_the_chunk() -> None:
    grid = ChunkGrid(4)
    assert [grid.floor(p) for p in (0, 3, 4, 9)] == [0, 0, 4, 8]
    assert grid.piece(0, 10) == 4 and grid.piece(6, 10) == 2 and grid.piece(8, 10) == 2 and grid.piece(9, 10) == 1
    assert grid.is_whole(4, 4) and not grid.is_whole(6, 4) and not grid.is_whole(8, 2)
    with pytest.raises(ValueError, match="prefill chunk"):
        ChunkGrid(0)


def fed_after(engine: Engine, runner: RewindingRunner, prompt: list[int], params: SamplingParams
              ) -> list[tuple[int, int]]:
    """Run one request; the (start, length) of each prompt chunk it fed."""
    runner.fed.clear()
    outputs: queue.SimpleQueue[TokenOutput] = queue.SimpleQueue()
    engine.submit(prompt, params, outputs.put)
    while outputs.get(timeout=10).finish_reason is None:
        pass
    assert wait_idle(engine)
    return [(c.start_pos, len(c.token_ids)) for c in runner.fed if c.start_pos < len(prompt)]


@pytest.fixture
def scripted() -> Iterator[tuple[Engine, RewindingRunner]]:
    runner = RewindingRunner(max_slots=1)
    engine = Engine(runner, eos_token_ids=[0], max_running=1, prefill_chunk=4)
    yield engine, runner
    engine.shutdown()


def test_after_a_reused_prefix_chunks_still_end_on_the_grid(scripted: tuple[Engine, RewindingRunner]) -> None:
    engine, runner = scripted
    base = list(range(20, 26))  # 6 tokens
    assert fed_after(engine, runner, base, DRAWN) == [(0, 4), (4, 2)]
    # shares 6 tokens: a drawn seed reuses all 6, and its next chunk stops at 8, not at 6 + 4
    assert fed_after(engine, runner, [*base, 40, 41, 42, 43, 44], DRAWN) == [(6, 2), (8, 3)]


def test_an_own_seed_reuses_only_whole_chunks_computed_cold(scripted: tuple[Engine, RewindingRunner]) -> None:
    engine, runner = scripted
    base = list(range(20, 30))  # 10 tokens: [0, 4) and [4, 8) whole, [8, 10) a partial last chunk
    fed_after(engine, runner, base, DRAWN)
    longer = [*base, 40, 41, 42]
    # the cached [8, 10) came from a 2-token chunk, a cold run of this prompt computes [8, 12): from 8 again
    assert fed_after(engine, runner, longer, OWN_SEED) == [(8, 4), (12, 1)]
    # shares 5 tokens with what the slot holds: [0, 4) is reusable, position 4 is not a whole chunk's
    assert fed_after(engine, runner, [*base[:5], 50, 51, 52], OWN_SEED) == [(4, 4)]


def test_an_own_seed_recomputes_a_decoded_answer(scripted: tuple[Engine, RewindingRunner]) -> None:
    # turn 2 of a conversation: the slot holds turn 1's prompt and answer, but the answer's KV was decoded one token
    # at a time, which a cold prefill of turn 2 never does; the drawn seed reuses it, the own seed does not
    engine, runner = scripted
    first = list(range(20, 28))  # 8 tokens: two whole chunks
    fed_after(engine, runner, first, OWN_SEED)  # answers 28, 29, 30
    second = [*first, 28, 29, 50, 51]
    assert fed_after(engine, runner, second, OWN_SEED) == [(8, 4)]
    fed_after(engine, runner, first, OWN_SEED)
    assert fed_after(engine, runner, second, DRAWN) == [(10, 2)]


def test_an_own_seed_never_gets_a_chunk_cut_short_by_the_budget() -> None:
    scheduler = Scheduler(max_slots=2, max_model_len=64, prefill_chunk=4, reuse_prefix=True)
    scheduler.max_batched_tokens = 6  # room for one chunk and a half

    def seq(name: str, params: SamplingParams) -> Sequence:
        prompt = list(range(10, 18))
        return Sequence(name, prompt, params, SamplingState.create(params, prompt, 64), frozenset([0]))

    scheduler.add(seq("drawn", DRAWN))
    scheduler.add(seq("own", OWN_SEED))
    batch = scheduler.schedule()
    # the first takes a whole chunk; 2 tokens are left, which a drawn seed would take but the own seed waits for
    assert [(s.request_id, c.start_pos, len(c.token_ids))
            for s, c in zip(batch.owners, batch.chunks, strict=True)] == [("drawn", 0, 4)]
    scheduler.postprocess(batch, [], [])
    batch = scheduler.schedule()
    assert [(s.request_id, c.start_pos, len(c.token_ids))
            for s, c in zip(batch.owners, batch.chunks, strict=True)] == [("drawn", 4, 4)]
    scheduler.postprocess(batch, [[30]], [[None]])
    # the drawn one decodes now: beside decodes only, the own seed takes its whole chunk over the budget's 5
    batch = scheduler.schedule()
    assert [(s.request_id, c.start_pos, len(c.token_ids))
            for s, c in zip(batch.owners, batch.chunks, strict=True)] == [("drawn", 8, 1), ("own", 0, 4)]


def test_a_repeat_fed_its_last_token_again_leaves_no_row_an_own_seed_takes_for_exact(
        scripted: tuple[Engine, RewindingRunner]) -> None:
    # An 8-token prompt (two whole chunks) is cached with more after it, so the slot keeps no row after it; a drawn
    # seed then feeds its last token again, a 1-token chunk at 7 that a cold run never computes: the row it keeps
    # must not count as a cold run's, or the own seed below would be answered from it
    engine, runner = scripted
    prompt = list(range(20, 28))
    fed_after(engine, runner, [*prompt, 40, 41], DRAWN)
    assert fed_after(engine, runner, prompt, DRAWN) == [(7, 1)]
    assert fed_after(engine, runner, prompt, OWN_SEED) == [(4, 4)]  # as a cold run cuts it, from the last whole chunk
