"""Who holds each KV slot, and what the KV of a free slot still holds: the scheduler's one record of slot contents.

A running sequence owns its slot (its ``num_computed`` says how far its KV goes); a free slot keeps the tokens of
the last sequence that ran in it, so a later prompt starting the same way reuses them (prefix reuse). Every change
of a slot's contents goes through here: taking a slot for a sequence, giving it back with or without its KV,
evicting an idle slot's cache to make room under a KV budget, and the list of slots whose KV the runner must now
forget (``take_freed``). Token ids, and per free slot two more facts: the logits row after the prompt its last
sequence ran (``KeptRow``), so an exact repeat of that prompt needs no forward; and how many leading positions of
its KV a cold prefill would have computed bit for bit (whole chunks of the grid, chunk_grid.py), the only part a
request with its own seed may reuse (as nano-vllm's BlockManager, one slot per sequence). For cache reuse
(cache_reuse.py) it also keeps how far each slot's cells may be shared with another slot's (a prefix copy on
llama.cpp's unified cache shares cells, and moving a shared cell would move it for both).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qwen_stream.engine.sched.chunk_grid import ChunkGrid
from qwen_stream.engine.sched.kv_budget import KVBudget


@dataclass(frozen=True, slots=True)
class KeptRow:
    """The logits row after a prompt of ``prompt_len`` tokens, and whether a cold prefill gives the same row (its
    prompt was computed in whole grid chunks from position 0, the last one ending at the prompt's end)."""

    prompt_len: int
    row: Any
    exact: bool


class SlotPool:
    def __init__(self, max_slots: int, *, reuse_prefix: bool, kv_budget: KVBudget | None = None,
                 grid: ChunkGrid | None = None) -> None:
        self.reuse_prefix = reuse_prefix
        self.kv_budget = kv_budget  # None: every slot owns a full window of KV (kv_budget.py)
        self.grid = grid or ChunkGrid(512)
        self.free: list[int] = list(range(max_slots))  # least recently freed first
        self._held: list[list[int]] = [[] for _ in range(max_slots)]  # what each free slot's KV still holds
        self._exact: list[int] = [0] * max_slots  # ... of which the first n are as a cold prefill computes them
        self._freed: list[int] = []  # since the last take_freed(): the runner must forget their KV
        self._logits: list[KeptRow | None] = [None] * max_slots  # per free slot: its last prompt's row
        self._shared: list[int] = [0] * max_slots  # positions below this may be cells shared with another slot

    def held(self, slot: int) -> list[int]:
        """The tokens a free slot's KV still holds (empty for a running one: its sequence says)."""
        return self._held[slot]

    def shared_upto(self, slot: int) -> int:
        """The slot's cells below this position may also be another slot's (never move them)."""
        return self._shared[slot]

    def note_copy(self, src: int, dst: int, length: int) -> None:
        """dst takes src's first ``length`` positions (a PrefixCopy): on a unified cache both now share those cells."""
        self._shared[dst] = length
        self._shared[src] = max(self._shared[src], length)

    def best_match(self, prompt: list[int], *, use_prefix: bool = True, exact: bool = False) -> tuple[int, int]:
        """The free slot for ``prompt`` and how many of its leading tokens to reuse from that slot's KV: the longest
        reusable prefix; else an empty slot; else the least recently freed. Needs a free slot. With ``exact`` (a
        request with its own seed) only what a cold prefill would have computed bit for bit counts."""
        best, best_key = self.free[0], (-1, 0, False, 0)
        for rank, slot in enumerate(self.free):  # rank 0: freed longest ago
            held = self._held[slot]
            shared = shared_prefix(held, prompt) if self.reuse_prefix and use_prefix else 0
            reusable = self._reusable(slot, prompt, shared, exact) if shared else 0
            # exact: among equals, the slot sharing the most, rewound, rather than an empty one. On llama.cpp's shared
            # pool the numbers also depend on where a sequence's cells land: rewinding the slot that held this
            # conversation gives its cells back where a cold run would put them (when nothing else is cached).
            key = (reusable, shared if exact else 0, not held, -rank)
            if key > best_key:
                best, best_key = slot, key
        return best, int(best_key[0])

    def _reusable(self, slot: int, prompt: list[int], shared: int, exact: bool) -> int:
        """Of the ``shared`` leading tokens free ``slot`` holds of ``prompt``, how many to reuse."""
        if shared == len(prompt):
            if self.kept_row(slot, prompt, exact=exact) is not None:
                return shared  # the whole prompt and the row after it: nothing to compute
            shared = max(shared - 1, 0)  # the last prompt token is fed again: its logits row is needed
        return self.exact_part(slot, shared) if exact else shared

    def exact_part(self, slot: int, reused: int) -> int:
        """Of the first ``reused`` tokens a prompt takes from free ``slot`` (at most what it shares with it), how many
        the slot holds exactly as a cold prefill computes them: whole grid chunks."""
        return self.grid.floor(min(reused, self._exact[slot]))

    def kept_row(self, slot: int, prompt: list[int], *, exact: bool = False) -> KeptRow | None:
        """The logits row after ``prompt`` if free ``slot`` holds that whole prompt and kept its row (with
        ``exact``: a row a cold prefill gives too), else None."""
        kept = self._logits[slot]
        if kept is None or kept.prompt_len != len(prompt) or (exact and not kept.exact):
            return None
        if shared_prefix(self._held[slot], prompt) < len(prompt):
            return None
        return kept

    def make_room(self, slot: int, need: int, reserved: int) -> bool:
        """With a KV budget: whether ``need`` more cells fit beside the ``reserved`` ones once idle slots' caches
        (other than ``slot``, about to be taken) are evicted, least recently used first; evicts them if so."""
        if self.kv_budget is None:
            return True
        idle = [(s, self.kv_budget.cached(len(self._held[s]))) for s in self.free if s != slot and self._held[s]]
        evict = self.kv_budget.evictions(need, reserved, idle)
        if evict is None:
            return False
        for s in evict:
            self._forget(s)
        return True

    def take(self, slot: int) -> None:
        """A sequence owns ``slot`` from now on (what its KV held is the sequence's to reuse or overwrite)."""
        self.free.remove(slot)
        self._held[slot] = []
        self._exact[slot] = 0
        self._logits[slot] = None

    def release(self, slot: int, tokens: list[int] | None, kept: KeptRow | None = None, exact: int = 0) -> None:
        """The sequence in ``slot`` ended: its KV holds ``tokens`` to reuse, the first ``exact`` of them as a cold
        prefill computes them, or (None, or no prefix reuse) nothing trustworthy, and the runner must forget it.
        ``kept``: the row after its prompt, kept while ``tokens`` cover that prompt."""
        self.free.append(slot)
        if self.reuse_prefix and tokens is not None:
            self._held[slot] = tokens
            self._exact[slot] = self.grid.floor(min(exact, len(tokens)))
            if kept is not None and len(tokens) >= kept.prompt_len:
                self._logits[slot] = kept
        else:
            self._forget(slot)

    def forget_cached(self) -> None:
        """Drop what every free slot keeps for reuse (benchmarks start each measurement from an empty cache)."""
        for slot in self.free:
            if self._held[slot]:
                self._forget(slot)

    def take_freed(self) -> list[int]:
        freed, self._freed = self._freed, []
        return freed

    def _forget(self, slot: int) -> None:
        self._held[slot] = []
        self._exact[slot] = 0
        self._logits[slot] = None
        self._shared[slot] = 0
        self._freed.append(slot)


def shared_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two token lists."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
