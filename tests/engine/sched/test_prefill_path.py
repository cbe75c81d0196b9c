"""The fast-prefill planner (engine/sched/prefill_path.py) and the scheduler's use of it, with no model."""

from __future__ import annotations

from qwen_stream.engine.request import Sequence
from qwen_stream.engine.runners.base import SeqChunk
from qwen_stream.engine.sample.per_sequence import SamplingState
from qwen_stream.engine.sched.prefill_path import PrefillPaths, paths_for
from qwen_stream.engine.sched.scheduler import Scheduler
from qwen_stream.types import SamplingParams


def chunk(n: int, *, fast: bool, slot: int = 0) -> SeqChunk:
    return SeqChunk(slot, [1] * n, 0, want_logits=False, fast=fast)


def step_choice(paths: PrefillPaths, n: int = 512) -> bool:
    """The way a step's first eligible chunk of ``n`` tokens goes."""
    paths.new_step()
    return paths.choose(n)


def test_both_ways_are_measured_first_then_the_cheaper_one_is_taken() -> None:
    paths = PrefillPaths(lambda: True)
    assert step_choice(paths) is True  # nothing measured: the fast way first
    paths.record([chunk(512, fast=True)], 2.0)  # 3.9 ms a token
    assert step_choice(paths) is False  # then llama.cpp's own
    paths.record([chunk(512, fast=False)], 4.0)  # 7.8 ms a token
    choices = [step_choice(paths) for _ in range(32)]
    assert choices.count(False) == 2 and choices[15] is False and choices[31] is False  # retried every 16th
    assert paths.fast_tokens == 512


def test_a_dearer_fast_way_is_left_after_measuring_it() -> None:
    paths = PrefillPaths(lambda: True)
    paths.record([chunk(512, fast=True)], 8.0)
    paths.record([chunk(512, fast=False)], 4.0)
    assert [step_choice(paths) for _ in range(15)] == [False] * 15


def test_short_chunks_pooled_and_mixed_steps_are_not_measured_or_sent_fast() -> None:
    paths = PrefillPaths(lambda: True)
    assert step_choice(paths, 63) is False  # a follow-up turn's few tokens
    paths.record([chunk(512, fast=True), chunk(512, fast=False, slot=1)], 3.0)  # both ways in one step: no reading
    paths.record([chunk(1, fast=False), chunk(3, fast=False)], 0.05)  # decodes only
    paths.record([SeqChunk(0, [1] * 512, 0, want_logits=False, hidden=True)], 1.0)  # an embedding prompt
    assert all(v != v for v in paths.cost.values())  # still NaN: nothing measured


def test_nothing_goes_fast_until_the_runner_is_ready_and_always_forces_it() -> None:
    ready = [False]
    paths = PrefillPaths(lambda: ready[0], always=True)
    assert step_choice(paths) is False
    ready[0] = True
    paths.record([chunk(512, fast=True)], 100.0)
    paths.record([chunk(512, fast=False)], 1.0)
    assert step_choice(paths) is True  # prefill="int8": whatever the measurements say


def test_every_eligible_chunk_of_a_step_goes_one_way_even_when_retrying_the_dearer_one() -> None:
    # two prompts prefilling at once: the 16th step retries llama.cpp for both chunks, so that step measures it
    paths = PrefillPaths(lambda: True)
    paths.record([chunk(512, fast=True)], 2.0)
    paths.record([chunk(512, fast=False)], 4.0)
    steps = []
    for _ in range(16):
        paths.new_step()
        steps.append((paths.choose(512), paths.choose(300)))
    assert steps[:15] == [(True, True)] * 15 and steps[15] == (False, False)
    before = paths.cost[False]
    paths.record([chunk(512, fast=False), chunk(300, fast=False, slot=1)], 8.12)  # the retried way, slower now
    assert paths.cost[False] > before


def test_paths_only_for_runners_that_take_a_fast_prefill() -> None:
    class Runner:
        fast_prefill_coming = True  # being built: not ready yet
        fast_prefill_ready = False

    assert paths_for(object()) is None
    paths = paths_for(Runner())
    assert paths is not None and paths.choose(512) is False


def sequence(name: str, prompt: list[int], params: SamplingParams) -> Sequence:
    return Sequence(name, prompt, params, SamplingState.create(params, prompt, 2048), frozenset([0]))


def scheduler(paths: PrefillPaths) -> Scheduler:
    return Scheduler(max_slots=2, max_model_len=4096, prefill_chunk=512, reuse_prefix=True, prefill_paths=paths)


def test_a_seeded_request_never_goes_fast_and_fast_chunks_never_count_as_exact() -> None:
    sched = scheduler(PrefillPaths(lambda: True, always=True))
    drawn = sequence("a", list(range(10, 1010)), SamplingParams(max_new_tokens=4, seed=3, seed_drawn=True))
    own = sequence("b", list(range(10, 1010)), SamplingParams(max_new_tokens=4, seed=3))
    sched.add(drawn)
    sched.add(own)
    batch = sched.schedule()
    ways = {seq.request_id: c.fast for seq, c in zip(batch.owners, batch.chunks, strict=True)}
    assert ways == {"a": True, "b": False}
    sched.postprocess(batch, [], [])
    assert drawn.exact_upto == 0 and own.exact_upto == 512
    batch = sched.schedule()  # the last chunks: the drawn seed's row is not a cold run's either
    assert [c.fast for c in batch.chunks] == [True, False]
    assert drawn.prompt_row_exact is False and own.prompt_row_exact is True


def test_a_seeded_request_copies_the_part_of_a_shared_prefix_computed_as_a_cold_run_does() -> None:
    # a (drawn seed) computes [0, 512) on llama.cpp's kernels, then [512, 1024) fast; b (its own seed) shares 1100
    # tokens with it: it copies the exact [0, 512) and computes the rest itself, on the grid
    ready = [False]
    sched = Scheduler(max_slots=2, max_model_len=4096, prefill_chunk=512, reuse_prefix=True, share_prefix=True,
                      prefill_paths=PrefillPaths(lambda: ready[0], always=True))
    shared = list(range(10, 1110))
    a = sequence("a", [*shared, 7, 8, 9], SamplingParams(max_new_tokens=4, seed=3, seed_drawn=True))
    b = sequence("b", [*shared, 5, 6], SamplingParams(max_new_tokens=4, seed=3))
    sched.add(a)
    sched.add(b)
    batch = sched.schedule()
    assert [(o.request_id, c.start_pos, c.fast) for o, c in zip(batch.owners, batch.chunks, strict=True)] == \
        [("a", 0, False)] and b.prefix_source is a and b.prefix_len == 1024
    sched.postprocess(batch, [], [])
    ready[0] = True
    batch = sched.schedule()
    assert [(o.request_id, c.start_pos, c.fast) for o, c in zip(batch.owners, batch.chunks, strict=True)] == \
        [("a", 512, True)]
    sched.postprocess(batch, [], [])
    assert a.exact_upto == 512
    batch = sched.schedule()
    assert [(c.src, c.dst, c.length) for c in batch.copies] == [(a.slot, b.slot, 512)] and b.exact_upto == 512
    assert [(o.request_id, c.start_pos, c.fast) for o, c in zip(batch.owners, batch.chunks, strict=True)] == \
        [("a", 1024, True), ("b", 512, False)]
