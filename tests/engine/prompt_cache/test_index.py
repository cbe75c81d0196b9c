"""The prompt cache's index, pure: longest-prefix lookup, coverage, superseded entries, LRU eviction under the bound,
and when a load is worth its read. No files, no model."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_stream.engine.prompt_cache.index import (
    LOAD_GAIN_SHARE,
    MIN_LOAD_GAIN,
    PromptEntry,
    PromptIndex,
    PromptMatch,
    common_prefix,
    worth_loading,
)


def entry(name: str, tokens: list[int], *, size: int = 100, used: float = 0.0, logits: bool = True) -> PromptEntry:
    return PromptEntry(name, np.asarray(tokens, dtype=np.int32), size, logits, used)


SYSTEM = list(range(1, 301))  # a 300-token shared prefix


def test_common_prefix() -> None:
    a = np.asarray([1, 2, 3, 4], np.int32)
    assert common_prefix(a, np.asarray([1, 2, 9], np.int32)) == 2
    assert common_prefix(a, a[:3]) == 3
    assert common_prefix(a, np.asarray([7], np.int32)) == 0


def test_best_is_the_longest_shared_prefix_and_ties_go_to_the_shorter_entry() -> None:
    index = PromptIndex(10_000)
    index.add(entry("a", [*SYSTEM, 500, 501]))
    index.add(entry("b", [*SYSTEM[:100], 900]))
    index.add(entry("c", [*SYSTEM, 600, 601, 602]))
    assert index.best([*SYSTEM, 700]) == PromptMatch("a", 302, 300, True)  # a and c share 300: a is cheaper
    assert index.best([*SYSTEM, 600, 601, 5]) == PromptMatch("c", 303, 302, True)
    assert index.best([*SYSTEM[:150], 5]) == PromptMatch("a", 302, 150, True)
    assert index.best([*SYSTEM[:100], 900, 5]) == PromptMatch("b", 101, 101, True)
    assert index.best([999, 1, 2]) is None  # nothing shared at all


def test_covers_a_prompt_saved_whole_or_as_the_start_of_a_longer_one() -> None:
    index = PromptIndex(10_000)
    index.add(entry("a", [*SYSTEM, 500]))
    assert index.covers([*SYSTEM, 500]) and index.covers(SYSTEM)
    assert not index.covers([*SYSTEM, 501]) and not index.covers([*SYSTEM, 500, 1])


def test_a_longer_prompt_supersedes_the_saved_prompts_it_starts_with() -> None:
    # a conversation's earlier turns: loadable from the latest one, so only that one is kept
    index = PromptIndex(10_000)
    assert index.add(entry("turn1", [*SYSTEM, 1])) == []
    assert index.add(entry("other", [*SYSTEM, 2])) == []  # diverges: kept
    assert index.add(entry("turn2", [*SYSTEM, 1, 7, 8])) == ["turn1"]
    assert sorted(index.entries) == ["other", "turn2"]


def test_least_recently_used_entries_go_first_and_the_new_one_stays() -> None:
    index = PromptIndex(300)
    index.add(entry("a", [1, 1], size=100, used=1.0))
    index.add(entry("b", [2, 2], size=100, used=2.0))
    index.add(entry("c", [3, 3], size=100, used=3.0))
    index.touch("a", 4.0)  # loaded again: now the most recent
    assert index.add(entry("d", [4, 4], size=150, used=5.0)) == ["b", "c"]
    assert sorted(index.entries) == ["a", "d"] and index.total_bytes == 250
    assert index.fits(300) and not index.fits(301)


def test_a_lowered_bound_evicts_on_demand() -> None:
    index = PromptIndex(1_200)
    for i, used in enumerate([3.0, 1.0, 2.0]):
        index.add(entry(f"e{i}", [i + 1], size=400, used=used))
    index.max_bytes = 500
    assert index.evictions() == ["e1", "e2"]
    assert list(index.entries) == ["e0"]
    with pytest.raises(ValueError, match="size bound"):
        PromptIndex(0)


def test_a_load_must_spare_enough_prefill_for_what_it_reads() -> None:
    assert not worth_loading(MIN_LOAD_GAIN - 1, MIN_LOAD_GAIN)
    assert worth_loading(MIN_LOAD_GAIN, MIN_LOAD_GAIN * LOAD_GAIN_SHARE)
    assert not worth_loading(MIN_LOAD_GAIN, MIN_LOAD_GAIN * LOAD_GAIN_SHARE + 1)
    assert worth_loading(2000, 2400)
