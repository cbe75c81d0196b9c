"""Loads of saved prompts at admission (the prompt cache on disk), as scheduler data: which entry a prompt loads,
how much of it is kept, when a free slot's own prefix or a running sequence's wins, and how a failed load turns
into a cold prefill. Pure: the index is given entries by hand; no files, no runner."""

from __future__ import annotations

import numpy as np

from qwen_stream.engine.prompt_cache.index import PromptEntry, PromptIndex
from qwen_stream.engine.request import Sequence
from qwen_stream.engine.sample.per_sequence import SamplingState
from qwen_stream.engine.sched.scheduler import Scheduler
from qwen_stream.types import SamplingParams

VOCAB = 1000
PARAMS = SamplingParams(max_new_tokens=4, temperature=0.0)
SAVED = list(range(1, 401))  # a saved 400-token prompt


def seq(name: str, prompt: list[int]) -> Sequence:
    return Sequence(name, prompt, PARAMS, SamplingState.create(PARAMS, prompt, VOCAB), frozenset({0}))


def scheduler(*entries: list[int], logits: bool = True, **options: object) -> Scheduler:
    index = PromptIndex(1 << 30)
    for i, tokens in enumerate(entries):
        index.add(PromptEntry(f"e{i}", np.asarray(tokens, np.int32), 1000, logits, float(i)))
    return Scheduler(max_slots=2, max_model_len=2048, prefill_chunk=128, reuse_prefix=True, prompt_cache=index,
                     **options)  # type: ignore[arg-type]


def test_a_saved_whole_prompt_with_its_row_is_recalled_without_a_forward() -> None:
    s = scheduler(SAVED)
    s.add(a := seq("a", SAVED))
    batch = s.schedule()
    assert [(load.seq, load.entry, load.length, load.keep) for load in batch.loads] == [(a, "e0", 400, 400)]
    assert batch.chunks == [] and batch.recalled == [a] and a.recalled
    assert (a.num_computed, a.num_cached, s.reused_tokens) == (400, 400, 400)


def test_a_shared_prefix_is_loaded_and_only_the_rest_prefilled() -> None:
    s = scheduler(SAVED)
    s.add(a := seq("a", [*SAVED[:300], 901, 902]))
    batch = s.schedule()
    assert [(load.length, load.keep) for load in batch.loads] == [(400, 300)]  # all 400 read, 300 kept
    assert [(c.start_pos, c.token_ids) for c in batch.chunks] == [(300, [901, 902])]
    assert not a.recalled


def test_a_prompt_inside_a_saved_one_recomputes_its_last_token() -> None:
    s = scheduler(SAVED)
    s.add(seq("a", SAVED[:300]))
    batch = s.schedule()
    assert [load.keep for load in batch.loads] == [299]  # its row: the last token is fed again
    assert [c.start_pos for c in batch.chunks] == [299]


def test_without_its_logits_row_a_whole_saved_prompt_is_not_recalled() -> None:
    s = scheduler(SAVED, logits=False)
    s.add(a := seq("a", SAVED))
    batch = s.schedule()
    assert [load.keep for load in batch.loads] == [len(SAVED) - 1] and not a.recalled


def test_a_short_shared_prefix_is_not_worth_a_load() -> None:
    s = scheduler(SAVED)
    s.add(seq("a", [*SAVED[:40], 999]))  # 40 tokens: under the minimum gain
    assert s.schedule().loads == []
    s = scheduler(SAVED)
    s.add(seq("b", [*SAVED[:48], *range(500, 600)]))  # 48 of 400 read: under an eighth of the entry
    assert s.schedule().loads == []


def test_a_free_slot_holding_the_prefix_needs_no_load() -> None:
    s = scheduler(SAVED)
    s.add(seq("a", [*SAVED[:300], 950]))
    assert len(s.schedule().loads) == 1
    while s.has_work:  # a's answer: 5, 5, 5, 5
        batch = s.schedule()
        s.postprocess(batch, [[5] for _ in batch.sampled], [[None] for _ in batch.sampled])
    s.add(seq("b", [*SAVED[:300], 950, 5, 5]))
    assert s.schedule().loads == []  # the slot a left holds 300 + 3 of b's tokens: better than the disk's 300


def test_a_failed_load_sends_the_sequence_back_to_a_cold_prefill() -> None:
    s = scheduler(SAVED)
    s.add(a := seq("a", SAVED))
    s.add(b := seq("b", [*SAVED[:200], 901]))
    batch = s.schedule()
    assert len(batch.loads) == 2 and batch.recalled == [a] and [o.request_id for o in batch.owners] == ["b"]
    s.load_failed(a, batch)
    s.load_failed(b, batch)
    assert batch.empty and batch.sampled == [] and s.reused_tokens == 0
    assert (a.num_computed, a.num_cached, a.recalled, a.prompt_logits) == (0, 0, False, None)
    batch = s.schedule()  # the next step prefills both from the start
    assert batch.loads == [] and [(c.slot, c.start_pos) for c in batch.chunks] == [(a.slot, 0), (b.slot, 0)]


def test_a_sequence_copies_from_a_loaded_one_only_once_the_load_holds() -> None:
    s = scheduler(SAVED, share_prefix=True)
    s.add(a := seq("a", [*SAVED[:300], 901]))
    s.add(b := seq("b", [*SAVED[:300], 902]))
    first = s.schedule()
    # a loads 300 tokens; b would also gain from the disk, but a running sequence holding the prefix is cheaper
    assert [load.seq for load in first.loads] == [a] and b.prefix_source is a and first.copies == []
    second = s.schedule()
    assert [(c.src, c.dst, c.length) for c in second.copies] == [(a.slot, b.slot, 300)]


def exact_scheduler(exact: int, row_exact: bool) -> Scheduler:
    """A scheduler whose one saved prompt is SAVED, the first ``exact`` positions of it (and its row, if
    ``row_exact``) as a cold prefill computes them."""
    index = PromptIndex(1 << 30)
    index.add(PromptEntry("e0", np.asarray(SAVED, np.int32), 1000, True, 0.0, exact, row_exact))
    return Scheduler(max_slots=2, max_model_len=2048, prefill_chunk=128, reuse_prefix=True, prompt_cache=index)


def own_seed(name: str, prompt: list[int]) -> Sequence:
    params = PARAMS.with_(seed=3)  # a seed of its own: the answer must not depend on what the cache holds
    return Sequence(name, prompt, params, SamplingState.create(params, prompt, VOCAB), frozenset({0}))


def test_a_seed_of_its_own_loads_only_what_a_cold_prefill_computes_bit_for_bit() -> None:
    # saved: 384 exact positions (three whole chunks of 128); the new prompt shares 300: two whole chunks are
    # exact, the rest of the shared prefix is recomputed from 256, on the grid
    s = exact_scheduler(384, row_exact=True)
    s.add(a := own_seed("a", [*SAVED[:300], 901]))
    batch = s.schedule()
    assert [load.keep for load in batch.loads] == [256] and [c.start_pos for c in batch.chunks] == [256]
    assert a.exact_upto == 256
    # the whole saved prompt: recalled only if its row is a cold run's ...
    s = exact_scheduler(384, row_exact=True)
    s.add(b := own_seed("b", SAVED))
    assert [load.keep for load in s.schedule().loads] == [400] and b.recalled and b.prompt_row_exact
    # ... else its last chunk is computed again, from the last exact grid point
    s = exact_scheduler(384, row_exact=False)
    s.add(c := own_seed("c", SAVED))
    assert [load.keep for load in s.schedule().loads] == [384] and not c.recalled
    # a file whose KV is not what a cold run computes (exact 0) gives a seed of its own nothing to load
    s = exact_scheduler(0, row_exact=False)
    s.add(own_seed("d", [*SAVED[:300], 901]))
    assert s.schedule().loads == []


def test_a_failed_load_takes_back_the_exactness_the_file_promised() -> None:
    # the file's 384 exact positions never reached the slot: the cold prefill that follows starts from nothing exact
    s = exact_scheduler(384, row_exact=True)
    s.add(a := own_seed("a", SAVED))
    batch = s.schedule()
    assert a.recalled and (a.exact_upto, a.prompt_row_exact) == (384, True)
    s.load_failed(a, batch)
    assert (a.exact_upto, a.prompt_row_exact) == (0, False)
    batch = s.schedule()
    assert [c.start_pos for c in batch.chunks] == [0]
    s.postprocess(batch, [], [])
    assert a.exact_upto == 128  # whole chunks from position 0 are exact again, one by one
