"""Who holds each KV slot, and what the KV of a free slot still holds: the scheduler's one record of slot contents.

A running sequence owns its slot (its ``num_computed`` says how far its KV goes); a free slot keeps the tokens of
the last sequence that ran in it, so a later prompt starting the same way reuses them (prefix reuse). Every change
of a slot's contents goes through here: taking a slot for a sequence, giving it back with or without its KV,
evicting an idle slot's cache to make room under a KV budget, and the list of slots whose KV the runner must now
forget (``take_freed``). Token ids, and one opaque row per free slot: the logits after the prompt its last
sequence ran, so an exact repeat of that prompt needs no forward (as nano-vllm's BlockManager, one slot per
sequence). For cache reuse (cache_reuse.py) it also keeps where a free slot's KV stops being what a cold prefill
gives (moved cells), and how far each slot's cells may be shared with another slot's (a prefix copy on llama.cpp's
unified cache shares cells, and moving a shared cell would move it for both).
"""

from __future__ import annotations

from typing import Any

from qwen_stream.engine.sched.kv_budget import KVBudget


class SlotPool:
    def __init__(self, max_slots: int, *, reuse_prefix: bool, kv_budget: KVBudget | None = None) -> None:
        self.reuse_prefix = reuse_prefix
        self.kv_budget = kv_budget  # None: every slot owns a full window of KV (kv_budget.py)
        self.free: list[int] = list(range(max_slots))  # least recently freed first
        self._held: list[list[int]] = [[] for _ in range(max_slots)]  # what each free slot's KV still holds
        self._freed: list[int] = []  # since the last take_freed(): the runner must forget their KV
        # per free slot: (prompt length, the logits row after that prompt) of its last sequence, or None
        self._logits: list[tuple[int, Any] | None] = [None] * max_slots
        self._shifted: list[int | None] = [None] * max_slots  # per free slot: Sequence.shifted_at of its last sequence
        self._shared: list[int] = [0] * max_slots  # positions below this may be cells shared with another slot

    def held(self, slot: int) -> list[int]:
        """The tokens a free slot's KV still holds (empty for a running one: its sequence says)."""
        return self._held[slot]

    def shifted_at(self, slot: int) -> int | None:
        """Where a free slot's KV stops being what a cold prefill of its tokens gives (moved cells); None: nowhere."""
        return self._shifted[slot]

    def shared_upto(self, slot: int) -> int:
        """The slot's cells below this position may also be another slot's (never move them)."""
        return self._shared[slot]

    def note_copy(self, src: int, dst: int, length: int) -> None:
        """dst takes src's first ``length`` positions (a PrefixCopy): on a unified cache both now share those cells."""
        self._shared[dst] = length
        self._shared[src] = max(self._shared[src], length)

    def best_match(self, prompt: list[int], *, use_prefix: bool = True, exact: bool = False) -> tuple[int, int]:
        """The free slot for ``prompt`` and how many of its leading tokens that slot's KV holds: the longest shared
        prefix; else an empty slot; else the least recently freed. ``exact``: only KV a cold prefill would give counts
        (a seeded request). Needs a free slot."""
        best, best_key = self.free[0], (-1, False, 0)
        for rank, slot in enumerate(self.free):  # rank 0: freed longest ago
            held = self._held[slot]
            shared = shared_prefix(held, prompt) if self.reuse_prefix and use_prefix else 0
            moved = self._shifted[slot]
            if exact and moved is not None:
                shared = min(shared, moved)
            key = (shared, not held, -rank)
            if key > best_key:
                best, best_key = slot, key
        return best, best_key[0]

    def kept_logits(self, slot: int, prompt: list[int]) -> Any:
        """The logits row after ``prompt`` if free ``slot`` holds that whole prompt and kept its row, else None."""
        kept = self._logits[slot]
        if kept is None or kept[0] != len(prompt) or shared_prefix(self._held[slot], prompt) < len(prompt):
            return None
        return kept[1]

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
        self._logits[slot] = None
        self._shifted[slot] = None

    def release(self, slot: int, tokens: list[int] | None, prompt_logits: tuple[int, Any] | None = None,
                shifted_at: int | None = None) -> None:
        """The sequence in ``slot`` ended: its KV holds ``tokens`` to reuse, or (None, or no prefix reuse) nothing
        trustworthy, and the runner must forget it. ``prompt_logits``: (prompt length, the row after it), kept
        while ``tokens`` cover that prompt; ``shifted_at``: the sequence's (where its KV holds moved cells)."""
        self.free.append(slot)
        if self.reuse_prefix and tokens is not None:
            self._held[slot] = tokens
            self._shifted[slot] = shifted_at if shifted_at is not None and shifted_at < len(tokens) else None
            if prompt_logits is not None and len(tokens) >= prompt_logits[0]:
                self._logits[slot] = prompt_logits
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
        self._logits[slot] = None
        self._shifted[slot] = None
        self._shared[slot] = 0
        self._freed.append(slot)


def shared_prefix(a: list[int], b: list[int]) -> int:
    """Length of the common prefix of two token lists."""
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n
