"""The shared KV budget's arithmetic: reservations, LRU eviction of idle caches, waiting when nothing fits."""

from __future__ import annotations

import pytest

from qwen_stream.engine.sched.kv_budget import KVBudget


def test_a_request_reserves_its_prompt_and_answer_within_the_window() -> None:
    budget = KVBudget(total=4096, slack=8)
    assert budget.reserve(100, 300, 4096) == 408
    assert budget.reserve(3000, 2000, 4096) == 4096  # never more than the whole budget: alone it always fits
    assert KVBudget(8192, slack=8).reserve(3000, 2000, 4096) == 4096 + 8
    assert budget.cached(0) == 0 and budget.cached(50) == 58


def test_nothing_is_evicted_while_there_is_room() -> None:
    assert KVBudget(1000).evictions(300, 400, [(3, 100), (5, 100)]) == []


def test_least_recently_used_caches_go_first_and_only_as_many_as_needed() -> None:
    budget = KVBudget(1000)
    # free: 1000 - 400 - 450 = 150; need 300 -> evict slot 3 (200 cells) -> 350 free
    assert budget.evictions(300, 400, [(3, 200), (5, 150), (7, 100)]) == [3]
    assert budget.evictions(500, 400, [(3, 200), (5, 150), (7, 100)]) == [3, 5]
    assert budget.evictions(550, 400, [(3, 200), (5, 150), (7, 100)]) == [3, 5, 7]


def test_a_request_that_cannot_fit_waits() -> None:
    assert KVBudget(1000).evictions(700, 400, [(3, 200)]) is None
    assert KVBudget(1000).evictions(601, 400, []) is None
    assert KVBudget(1000).evictions(600, 400, []) == []


def test_bad_budgets() -> None:
    with pytest.raises(ValueError):
        KVBudget(0)
    with pytest.raises(ValueError):
        KVBudget(10, slack=-1)
