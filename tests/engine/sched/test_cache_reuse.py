"""Cache reuse past the shared prefix (llama-server's --cache-reuse): cached runs after an edit move into the new
prompt instead of being computed again.

The planner on token ids alone (typical editor edits), the scheduler and step through a scripted runner that moves
its held tokens as the plan says, and the real llama.cpp runner on the SmolLM2 GGUF: the moved suffix is counted as
cached, and the answer stays close to a cold run's.
"""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Any

import pytest
import torch

from qwen_stream.engine.loop import Engine, wait_idle
from qwen_stream.engine.runners.base import KVRun, KVShift, SeqChunk, check_kv_shift
from qwen_stream.engine.sched.cache_reuse import CacheReuse, plan_reuse
from qwen_stream.engine.sched.slot_pool import SlotPool, shared_prefix
from qwen_stream.types import SamplingParams, TokenOutput
from tests.support.scripted_runners import RewindingRunner, ShiftingRunner

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=3, ignore_eos=True)
# An editor's prompt around the cursor: what comes before it, the typed line (old, then with a few more characters),
# what comes after it, and the token that asks for the middle.
BEFORE, OLD_LINE, NEW_LINE = list(range(10, 20)), [40], [41, 42]
AFTER, MIDDLE = list(range(20, 30)), [50]


def plan(held: list[int], prompt: list[int], *, min_run: int = 4, max_fill: int = 8, floor: int = 0) -> KVShift | None:
    start = 0
    while start < min(len(held), len(prompt)) and held[start] == prompt[start]:
        start += 1
    return plan_reuse(held, prompt, start, slot=0, min_run=min_run, max_fill=max_fill, floor=floor)


def served(held: list[int], shift: KVShift) -> list[int]:
    """What the slot holds after the shift (the scripted runner's rule)."""
    pieces = [(r.dst, held[r.src:r.src + r.length]) for r in shift.runs]
    pieces += [(f.start_pos, f.token_ids) for f in shift.fills]
    return held[:shift.keep] + [t for _, tokens in sorted(pieces) for t in tokens]


# --- the planner ---------------------------------------------------------------------------------------------------


def test_a_typed_character_reuses_the_suffix_after_the_cursor() -> None:
    held = BEFORE + OLD_LINE + AFTER + MIDDLE + [51, 52]  # the last keystroke's prompt and answer
    prompt = BEFORE + NEW_LINE + AFTER + MIDDLE
    shift = plan(held, prompt)
    assert shift == KVShift(0, 10, (KVRun(11, 12, 10),), (SeqChunk(0, NEW_LINE, 10, want_logits=False),))
    assert shift.served == len(prompt) - 1  # the last token is always fed, for its logits
    assert served(held, shift) == prompt[:-1]


def test_llama_servers_walk_cannot_reuse_after_an_insertion() -> None:
    # Without fills only cache tokens are skipped: the new tokens before the suffix stop the walk.
    held = BEFORE + OLD_LINE + AFTER + MIDDLE
    assert plan(held, BEFORE + NEW_LINE + AFTER + MIDDLE, max_fill=0) is None


def test_a_deleted_line_moves_the_rest_left_without_fills() -> None:
    line = [60, 61, 62, 63]
    held = BEFORE + line + AFTER + MIDDLE
    prompt = BEFORE + AFTER + MIDDLE
    for max_fill in (0, 8):
        shift = plan(held, prompt, max_fill=max_fill)
        assert shift == KVShift(0, 10, (KVRun(14, 10, 10),))
        assert served(held, shift) == prompt[:-1]


def test_two_edits_give_two_runs() -> None:
    one, two = list(range(20, 26)), list(range(30, 36))
    held = [*BEFORE, 60, *one, 61, 62, *two, *MIDDLE]
    prompt = BEFORE + one + [3] + two + MIDDLE
    shift = plan(held, prompt)
    assert shift is not None
    assert shift.runs == (KVRun(11, 10, 6), KVRun(19, 17, 6))
    assert served(held, shift) == prompt[:-1]


def test_nothing_to_reuse() -> None:
    held = BEFORE + AFTER + MIDDLE
    assert plan(held, BEFORE + list(range(30, 45)) + MIDDLE) is None  # other text after the prefix
    assert plan(held, BEFORE + AFTER[:5]) is None  # a shorter prompt: the prefix serves it
    assert plan(held, [*held, 5]) is None  # nothing cached past the prefix


def test_runs_shorter_than_the_minimum_are_computed() -> None:
    held = BEFORE + OLD_LINE + AFTER + MIDDLE
    prompt = BEFORE + NEW_LINE + AFTER + MIDDLE
    assert plan(held, prompt, min_run=11) is None  # the suffix is 10 tokens
    assert plan(held, prompt, min_run=10) is not None
    assert plan(held, prompt, max_fill=1) is None  # two new tokens, one may be computed


def test_shared_cells_never_move() -> None:
    held = BEFORE + OLD_LINE + AFTER + MIDDLE
    # positions below the floor are shared with another slot: what moves starts at the floor, the rest is computed
    prompt = BEFORE + NEW_LINE + AFTER + MIDDLE
    assert plan(held, prompt, floor=21) is None
    shift = plan(held, prompt, floor=15)
    assert shift is not None and shift.runs == (KVRun(15, 16, 6),) and shift.fills[0].token_ids == prompt[10:16]
    # an edit that keeps token counts leaves the suffix in place: reused even though shared
    shift = plan(held, [*BEFORE, 41, *AFTER, *MIDDLE], floor=15)
    assert shift is not None and shift.runs == (KVRun(11, 11, 10),)


def test_the_runners_check_refuses_a_bad_shift() -> None:
    good = KVShift(0, 10, (KVRun(11, 12, 10),), (SeqChunk(0, [1, 2], 10, want_logits=False),))
    check_kv_shift(good, 22, 64)
    bad = [KVShift(0, 10, (KVRun(11, 12, 10),)),  # a gap at 10, 11
           KVShift(0, 10, (KVRun(11, 10, 20),)),  # past what the slot holds
           KVShift(0, 12, (KVRun(11, 12, 10),)),  # a run inside the kept prefix
           KVShift(0, 10, (KVRun(11, 10, 5), KVRun(11, 15, 5))),  # runs out of order
           KVShift(0, 10, (KVRun(11, 60, 10),), (SeqChunk(0, [1] * 50, 10, want_logits=False),))]  # past the window
    for shift in bad:
        with pytest.raises(ValueError):
            check_kv_shift(shift, 22, 64)


# --- the scheduler and the step ------------------------------------------------------------------------------------


def run(engine: Engine, prompt: list[int], params: SamplingParams = GREEDY) -> tuple[list[int], int]:
    """The answer and its num_cached_tokens."""
    outputs: queue.SimpleQueue[TokenOutput] = queue.SimpleQueue()
    engine.submit(prompt, params, outputs.put)
    got, cached = [], 0
    while True:
        out = outputs.get(timeout=10)
        got += out.new_token_ids
        cached = cached or out.num_cached_tokens
        if out.finish_reason is not None:
            assert wait_idle(engine)
            return got, cached


def keystrokes(runner: RewindingRunner, cache_reuse: int = 4) -> tuple[Engine, list[int]]:
    """An engine that served the first keystroke; the second keystroke's prompt."""
    engine = Engine(runner, eos_token_ids=[0], max_running=1, cache_reuse=cache_reuse)
    run(engine, BEFORE + OLD_LINE + AFTER + MIDDLE)
    runner.fed.clear()
    return engine, BEFORE + NEW_LINE + AFTER + MIDDLE


def test_the_next_keystroke_feeds_only_its_last_token() -> None:
    runner = ShiftingRunner()
    engine, prompt = keystrokes(runner)
    try:
        # cached: the prefix and the moved suffix; computed: the typed line's two tokens (fills) and the last
        assert run(engine, prompt) == ([51, 52, 53], len(prompt) - 3)
        assert runner.shifts[-1].runs == (KVRun(11, 12, 10),)
        assert (runner.fed[0].start_pos, runner.fed[0].token_ids) == (len(prompt) - 1, MIDDLE)
        assert runner.held[0][:len(prompt)] == prompt  # the KV holds the new prompt, in order
        assert engine.core.scheduler.shifted_tokens == 10
    finally:
        engine.shutdown()


def test_a_request_setting_or_the_runner_turns_it_off() -> None:
    # (a seed of the request's own turns it off too: test_a_request_with_its_own_seed_never_reuses_moved_cells)
    cases = [(ShiftingRunner(), 4, GREEDY.with_(cache_reuse=0)),
             (ShiftingRunner(), 0, GREEDY), (ShiftingRunner(fills=False), 4, GREEDY), (RewindingRunner(), 4, GREEDY)]
    for runner, cache_reuse, params in cases:
        engine, prompt = keystrokes(runner, cache_reuse)
        try:
            assert run(engine, prompt, params) == ([51, 52, 53], len(BEFORE))
            assert runner.fed[0].start_pos == len(BEFORE)
        finally:
            engine.shutdown()


def test_a_request_may_ask_for_it_when_the_engine_does_not() -> None:
    runner = ShiftingRunner()
    engine, prompt = keystrokes(runner, cache_reuse=0)
    try:
        assert run(engine, prompt, GREEDY.with_(cache_reuse=4))[1] == len(prompt) - 3
    finally:
        engine.shutdown()


def test_a_request_with_its_own_seed_never_reuses_moved_cells() -> None:
    runner = ShiftingRunner()
    engine = Engine(runner, eos_token_ids=[0], max_running=1, cache_reuse=4, prefill_chunk=4)
    try:
        run(engine, BEFORE + OLD_LINE + AFTER + MIDDLE)
        prompt = BEFORE + NEW_LINE + AFTER + MIDDLE
        run(engine, prompt)  # the suffix moved: the slot's KV is a cold prefill's only in whole chunks before 12
        runner.fed.clear()
        assert run(engine, [*prompt, 5, 6], GREEDY.with_(seed=1))[1] == 8  # chunks of 4: [0, 8) of the prefix 12
        assert runner.fed[0].start_pos == 8 and not runner.shifts[1:]  # ... and no shift planned for it either
        runner.fed.clear()
        assert run(engine, [*prompt, 5, 7])[1] == len(prompt) + 1  # no seed of its own: the whole shared prefix
    finally:
        engine.shutdown()


def test_the_slot_pool_keeps_what_is_shared() -> None:
    pool = SlotPool(2, reuse_prefix=True)
    pool.take(0)
    pool.note_copy(0, 1, 4)
    assert (pool.shared_upto(0), pool.shared_upto(1)) == (4, 4)
    pool.release(0, [1, 2, 3, 4, 5])
    pool.forget_cached()
    assert pool.shared_upto(0) == 0


def test_the_policy_follows_the_request() -> None:
    policy = CacheReuse(4, fills=True)
    held = BEFORE + OLD_LINE + AFTER + MIDDLE

    class Seq:
        prompt_ids, slot, pooled, exact = BEFORE + NEW_LINE + AFTER + MIDDLE, 1, False, False
        params = GREEDY

    seq: Any = Seq()
    shift = policy.plan(seq, held, 10)
    assert shift is not None and shift.slot == 1 and shift.fills[0].slot == 1
    seq.params = GREEDY.with_(cache_reuse=11)
    assert policy.plan(seq, held, 10) is None


# --- the real llama.cpp runner (SmolLM2 GGUF) ----------------------------------------------------------------------

BEFORE_TEXT = ("def word_counts(paths, lower=True):\n    counts = Counter()\n    for path in paths:\n"
               "        words = WORD.findall(read_text(path))\n")
AFTER_TEXT = ("\n    return counts\n\n\ndef top_words(counts, n=10, stop=frozenset()):\n"
              "    kept = Counter({w: c for w, c in counts.items() if w not in stop})\n    return kept.most_common(n)\n")


def _pieces(gguf_path: Path) -> tuple[list[int], list[int], list[int], list[int], list[int]]:
    import llama_cpp

    vocab = llama_cpp.Llama(str(gguf_path), vocab_only=True, verbose=False)
    tokens = [vocab.tokenize(t.encode(), add_bos=False, special=False)
              for t in (BEFORE_TEXT, "        coun", "        counts.up", AFTER_TEXT, "\n#")]
    vocab.close()
    return tokens[0], tokens[1], tokens[2], tokens[3], tokens[4]


def _first_token(engine: Engine, prompt: list[int]) -> tuple[list[int], float, int]:
    outputs: queue.SimpleQueue[TokenOutput] = queue.SimpleQueue()
    engine.submit(prompt, SamplingParams(temperature=0.0, max_new_tokens=4, ignore_eos=True, logprobs=0),
                  outputs.put)
    got: list[TokenOutput] = []
    while not got or got[-1].finish_reason is None:
        got.append(outputs.get(timeout=60))
    assert wait_idle(engine)
    logprob = got[0].logprobs[0].logprob  # type: ignore[index]
    return [t for out in got for t in out.new_token_ids], logprob, got[0].num_cached_tokens


@pytest.mark.slow  # the real SmolLM2 GGUF on llama.cpp (tests/engine/conftest.py's gguf_path)
@pytest.mark.llamacpp
def test_llama_cpp_moves_the_suffix_after_a_keystroke(gguf_path: Path) -> None:
    from qwen_stream.engine.runners.llamacpp import LlamaCppRunner

    before, old, new, after, middle = _pieces(gguf_path)
    runner = LlamaCppRunner(gguf_path, max_slots=2, max_seq_len=512, threads=1, kv_budget=1024)
    assert runner.can_shift_kv and runner.can_fill_kv  # the unified cache fills the typed tokens' gap
    engine = Engine(runner, eos_token_ids=[], max_running=2, cache_reuse=16)
    try:
        prompt = before + new + after + middle
        _first_token(engine, before + old + after + middle)
        warm, warm_logprob, cached = _first_token(engine, prompt)
        # the suffix moved: only the typed line's new tokens and the last token were computed
        assert cached == len(prompt) - 1 - (len(new) - shared_prefix(old, new))
        engine.reset_prefix_cache()
        cold, cold_logprob, cached = _first_token(engine, prompt)
        assert cached == 0
        # the moved keys and values were computed over the old line: close to a cold run, not bit for bit
        assert warm == cold
        assert abs(warm_logprob - cold_logprob) < 0.1
    finally:
        engine.shutdown()


@pytest.mark.slow
@pytest.mark.llamacpp
def test_llama_cpp_moves_a_run_left_with_a_stream_per_slot(gguf_path: Path) -> None:
    from qwen_stream.engine.runners.llamacpp import LlamaCppRunner

    before, _, new, after, middle = _pieces(gguf_path)
    with LlamaCppRunner(gguf_path, max_slots=2, max_seq_len=256, threads=1) as runner:
        assert runner.can_shift_kv and not runner.can_fill_kv
        prompt, held = before + after + middle, before + new + after + middle  # the typed line deleted
        cold = runner.forward([SeqChunk(1, prompt, 0)])[0].clone()
        runner.forward([SeqChunk(0, held, 0, want_logits=False)])
        shift = plan_reuse(held, prompt, len(before), slot=0, min_run=16)
        # the run is the suffix and the middle's first token (its last one is fed, for the logits)
        assert shift is not None and shift.runs == (KVRun(len(before) + len(new), len(before), len(after) + 1),)
        runner.shift_kv(shift)
        assert runner.slot_length(0) == len(prompt) - 1
        warm = runner.forward([SeqChunk(0, prompt[-1:], len(prompt) - 1)])[0].clone()
        assert int(warm.argmax()) == int(cold.argmax())
        assert torch.corrcoef(torch.stack([warm, cold]))[0, 1] > 0.99
        with pytest.raises(ValueError, match="unified"):  # no gaps filled without the scratch sequence
            runner.shift_kv(KVShift(0, 3, (KVRun(3, 4, 2),), (SeqChunk(0, [1], 3, want_logits=False),)))
