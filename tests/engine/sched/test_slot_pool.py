"""SlotPool: the one record of what each KV slot holds, with no model (token ids only)."""

from __future__ import annotations

from qwen_stream.engine.sched.kv_budget import KVBudget
from qwen_stream.engine.sched.slot_pool import SlotPool


def _ran_once(pool: SlotPool, *held: list[int] | None) -> SlotPool:
    for slot in range(len(held)):
        pool.take(slot)
    for slot, tokens in enumerate(held):
        pool.release(slot, tokens)
    return pool


def test_a_released_slot_keeps_its_tokens_and_the_runner_forgets_only_dropped_ones() -> None:
    pool = _ran_once(SlotPool(3, reuse_prefix=True), [1, 2, 3], None, [4])
    assert (pool.held(0), pool.held(1), pool.held(2)) == ([1, 2, 3], [], [4])
    assert pool.take_freed() == [1]  # slot 1's KV is unknown (a failed step): the runner must clear it
    assert pool.take_freed() == []
    assert pool.best_match([1, 2, 9]) == (0, 2)
    pool.take(0)
    assert 0 not in pool.free and pool.held(0) == []


def test_without_prefix_reuse_nothing_is_kept() -> None:
    pool = _ran_once(SlotPool(2, reuse_prefix=False), [1, 2], [3])
    assert pool.held(0) == pool.held(1) == []
    assert pool.take_freed() == [0, 1]
    assert pool.best_match([1, 2]) == (0, 0)


def test_make_room_evicts_idle_caches_least_recently_freed_first() -> None:
    pool = _ran_once(SlotPool(3, reuse_prefix=True, kv_budget=KVBudget(total=100)), [1] * 40, [2] * 40, [3] * 10)
    assert pool.make_room(2, need=50, reserved=0)  # 90 cached: slot 0 (oldest) goes, slot 2 is being taken
    assert (pool.held(0), len(pool.held(1)), pool.take_freed()) == ([], 40, [0])
    assert not pool.make_room(2, need=90, reserved=30)  # cannot fit even with every idle cache gone
    assert len(pool.held(1)) == 40  # and then nothing was evicted


def test_forget_cached_clears_every_free_slot() -> None:
    pool = _ran_once(SlotPool(2, reuse_prefix=True), [1], [2])
    pool.forget_cached()
    assert pool.held(0) == pool.held(1) == [] and pool.take_freed() == [0, 1]
