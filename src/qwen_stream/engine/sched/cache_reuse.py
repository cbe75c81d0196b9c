"""Cache reuse past the shared prefix (llama-server's ``--cache-reuse N``): which runs of a slot's cached tokens a new
prompt takes over by moving their KV instead of computing them again, planned on token ids alone.

An editor's keystroke changes a few tokens at the cursor; everything after the cursor (the FIM suffix) is what the
slot held, one or two positions away. After the common prefix the planner walks prompt and cache together and
takes every run of at least ``min_run`` cached tokens that comes next in the prompt: its KV moves to the run's new
positions (RoPE-rotated keys, ``KVShift``), cache tokens skipped on the way are dropped. llama-server's walk only
skips cache tokens, so a run can only move left (text deleted before it); a typed character puts *new* prompt
tokens before the suffix, and there it reuses nothing. A runner that can also compute tokens in a gap below cells it
holds (``can_fill_kv``: llama.cpp's unified cache) lets the planner skip prompt tokens too: they become ``fills``,
computed before the forward, and the suffix after them is reused. A run must pay for itself: at least ``min_run``
tokens, and at most ``max_fill`` prompt tokens computed to reach the runs.

Moved KV is an approximation: a run's keys and values were computed over the old text before it, not the new one.
So a request with a seed of its own never gets a plan (its answer must not depend on what the cache held), and a
moved cell never counts as computed the way a cold prefill does (``Sequence.exact_upto`` stops before it).
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qwen_stream.engine.runners.base import KVRun, KVShift, SeqChunk

if TYPE_CHECKING:
    from qwen_stream.engine.request import Sequence

KEY = 8  # tokens that index a cache position: a run starts where the prompt's next KEY tokens occur in the cache
CANDIDATES = 64  # cache positions tried per prompt position (a repetitive cache must not make planning slow)
BLOCK = 64  # tokens compared per slice while measuring a run


@dataclass(slots=True, frozen=True)
class CacheReuse:
    """The engine's policy: runs of at least ``min_run`` tokens (0: off, unless a request asks for it); ``fills``:
    the runner computes tokens in gaps (insertions before a run); at most ``max_fill`` of them per prompt."""

    min_run: int
    fills: bool = False
    max_fill: int = 512

    def plan(self, seq: Sequence, held: list[int], reused: int, floor: int = 0) -> KVShift | None:
        """The shift for ``seq`` on its slot, which holds ``held`` and serves ``reused`` prompt tokens as a prefix;
        None for a request with a seed of its own or a pooled one, or nothing worth moving. ``floor``: cached positions below it may be
        shared with another slot's cells, so they never move (they may stay where they are)."""
        params = seq.params
        min_run = self.min_run if params.cache_reuse is None else params.cache_reuse
        if seq.exact or seq.pooled or min_run < 1:
            return None
        return plan_reuse(held, seq.prompt_ids, reused, slot=seq.slot, min_run=min_run,
                          max_fill=self.max_fill if self.fills else 0, floor=floor)


def policy_for(runner: Any, min_run: int, max_fill: int) -> CacheReuse | None:
    """The policy a runner allows: None if it cannot move KV (``shift_kv`` with ``can_shift_kv``)."""
    if not (callable(getattr(runner, "shift_kv", None)) and getattr(runner, "can_shift_kv", False)):
        return None
    return CacheReuse(max(0, min_run), fills=bool(getattr(runner, "can_fill_kv", False)), max_fill=max_fill)


def plan_reuse(held: list[int], prompt: list[int], start: int, *, slot: int, min_run: int, max_fill: int = 0,
               floor: int = 0) -> KVShift | None:
    """Runs of ``held[start:]`` to move into ``prompt`` after its first ``start`` tokens (shared with ``held``), in
    order, each at least ``min_run`` long; up to ``max_fill`` prompt tokens before them computed as fills (0: only
    cache tokens are skipped, llama-server's walk). The prompt's last token is never covered: it is fed for its
    logits. None when no run qualifies."""
    limit = len(prompt) - 1
    if min_run < 1 or limit - start < min_run or len(held) - start < min_run:
        return None
    key = min(KEY, min_run)
    index = _index(held, start, key)
    runs: list[KVRun] = []
    fills: list[SeqChunk] = []
    p = c = start  # next prompt position to serve, next cache position to consider
    while limit - p >= min_run:
        found = _next_run(held, prompt, (p, c, limit), (min_run, max_fill, floor), index, key)
        if found is None:
            break
        q, src, length = found
        if q > p:
            fills.append(SeqChunk(slot, prompt[p:q], p, want_logits=False))
            max_fill -= q - p
        runs.append(KVRun(src, q, length))
        p, c = q + length, src + length
    return KVShift(slot, start, tuple(runs), tuple(fills)) if runs else None


def _index(held: list[int], start: int, key: int) -> dict[tuple[int, ...], list[int]]:
    """Every cache position from ``start`` by the ``key`` tokens starting there (positions ascending)."""
    index: dict[tuple[int, ...], list[int]] = {}
    for i in range(start, len(held) - key + 1):
        index.setdefault(tuple(held[i:i + key]), []).append(i)
    return index


def _next_run(held: list[int], prompt: list[int], at: tuple[int, int, int], rules: tuple[int, int, int],
              index: dict[tuple[int, ...], list[int]], key: int) -> tuple[int, int, int] | None:
    """(prompt position, cache position, length) of the next run: the first prompt position within ``max_fill`` of
    ``p`` where a run of ``min_run`` starts at cache position ``c`` or later; the longest one there."""
    p, c, limit = at
    min_run, max_fill, floor = rules
    for q in range(p, min(p + max_fill, limit - min_run) + 1):
        best: tuple[int, int, int] | None = None
        positions = index.get(tuple(prompt[q:q + key]), [])
        first = bisect_left(positions, c)
        for src in positions[first:first + CANDIDATES]:
            if src != q and src < floor:  # moving it would move another slot's cell too
                continue
            if held[src:src + min_run] != prompt[q:q + min_run]:
                continue
            length = _run_length(held, src, prompt, q, limit)
            if best is None or length > best[2]:
                best = (q, src, length)
        if best is not None:
            return best
    return None


def _run_length(held: list[int], src: int, prompt: list[int], q: int, limit: int) -> int:
    """How many tokens from ``held[src]`` and ``prompt[q]`` agree, stopping before prompt position ``limit``."""
    most = min(len(held) - src, limit - q)
    n = 0
    while n + BLOCK <= most and held[src + n:src + n + BLOCK] == prompt[q + n:q + n + BLOCK]:
        n += BLOCK
    while n < most and held[src + n] == prompt[q + n]:
        n += 1
    return n
