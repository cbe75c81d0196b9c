"""What the prompt cache on disk holds, as plain data: its entries, the saved prompt sharing the longest prefix with
a new one, and which entries to evict to stay under the size bound, least recently used first.

No files (files.py reads and writes them) and no model: the scheduler asks an index which prefix it could load, the
store (store.py) keeps the index in step with the directory. An entry is one saved prompt: its token ids, the size
of its file, whether the file also holds the logits row after the prompt (then an exact repeat needs no forward),
and when it was last used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from qwen_stream.engine.sched.chunk_grid import ChunkGrid

# A load reads and checks the whole entry (~23-60 KB per token, f16 KV), then prefill starts where it ends: worth it
# when it spares at least this many tokens of prefill ...
MIN_LOAD_GAIN = 64
# ... and at least this share of the entry it reads (reading a token's KV costs ~1/25 of computing it on a CPU).
LOAD_GAIN_SHARE = 8


@dataclass(slots=True, eq=False)
class PromptEntry:
    name: str  # the file's stem in the model's directory
    tokens: np.ndarray  # int32 [length]: the prompt whose KV the file holds
    size: int  # bytes on disk
    has_logits: bool  # the file holds the logits row after the prompt too
    last_use: float  # saved or loaded last (seconds since the epoch: the file's mtime across restarts)
    exact: int = 0  # leading positions a cold prefill computes bit for bit (engine/sched/chunk_grid.py)
    row_exact: bool = False  # the logits row is a cold run's too

    @property
    def length(self) -> int:
        return len(self.tokens)


@dataclass(slots=True, frozen=True)
class PromptMatch:
    """The saved prompt sharing the longest prefix with a new prompt: ``shared`` leading tokens of both agree."""

    name: str
    length: int  # positions the entry holds (a load fills the slot with all of them, then trims to what is used)
    shared: int
    has_logits: bool
    exact: int = 0  # leading positions a cold prefill computes bit for bit
    row_exact: bool = False  # the logits row is a cold run's too


class PromptLookup(Protocol):
    """What the scheduler sees of the cache: token ids in, the best saved prefix out (store.py: thread-safe)."""

    def best(self, prompt: Sequence[int]) -> PromptMatch | None: ...


def worth_loading(gain: int, entry_length: int) -> bool:
    """Whether loading an entry of ``entry_length`` positions pays for sparing ``gain`` tokens of prefill."""
    return gain >= MIN_LOAD_GAIN and gain * LOAD_GAIN_SHARE >= entry_length


def load_plan(match: PromptMatch, prompt_len: int, reused: int, *, exact: bool,
              grid: ChunkGrid) -> tuple[int, int] | None:
    """How much of a saved prompt a new prompt of ``prompt_len`` tokens keeps, and how much of that a cold prefill
    computes bit for bit: (keep, exact positions), or None when the load does not pay over the ``reused`` tokens of
    the best free slot. All of a whole saved prompt with its row (recalled; for a request with a seed of its own,
    only a cold run's row); else the shared prefix, all of a prompt inside the saved one but its last token (fed
    again for its row); with ``exact`` only whole ``grid`` chunks a cold prefill computes (engine/sched/chunk_grid.py)."""
    if match.length == prompt_len == match.shared and match.has_logits and (match.row_exact or not exact):
        keep = prompt_len
    else:
        keep = min(match.shared, prompt_len - 1)
        if exact:
            keep = grid.floor(min(keep, match.exact))
    if keep <= 0 or not worth_loading(keep - reused, match.length):
        return None
    return keep, grid.floor(min(keep, match.exact))


def common_prefix(a: np.ndarray, b: np.ndarray) -> int:
    """Length of the common prefix of two int32 token arrays."""
    n = min(len(a), len(b))
    differ = np.flatnonzero(a[:n] != b[:n])
    return int(differ[0]) if differ.size else n


def starts_with(longer: np.ndarray, prefix: np.ndarray) -> bool:
    """Whether the int32 token array ``longer`` starts with all of ``prefix`` (or is it)."""
    return len(longer) >= len(prefix) and common_prefix(longer, prefix) == len(prefix)


class PromptIndex:
    """The entries of one model's cache directory and the size bound they share (not thread-safe: store.py locks)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 1:
            raise ValueError(f"the prompt cache needs a size bound >= 1 byte, got {max_bytes}")
        self.max_bytes = max_bytes
        self.entries: dict[str, PromptEntry] = {}

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def total_bytes(self) -> int:
        return sum(entry.size for entry in self.entries.values())

    def best(self, prompt: Sequence[int] | np.ndarray) -> PromptMatch | None:
        """The entry sharing the longest prefix with ``prompt`` (ties: the shorter entry, cheaper to read), or None
        when no entry shares a token."""
        ids = np.asarray(prompt, dtype=np.int32)
        best: PromptEntry | None = None
        best_key = (0, 0)
        for entry in self.entries.values():
            key = (common_prefix(entry.tokens, ids), -entry.length)
            if key[0] > 0 and key > best_key:
                best, best_key = entry, key
        if best is None:
            return None
        return PromptMatch(best.name, best.length, best_key[0], best.has_logits, best.exact, best.row_exact)

    def covers(self, prompt: Sequence[int] | np.ndarray) -> bool:
        """Whether an entry holds the whole of ``prompt`` (it, or a longer prompt starting with it)."""
        ids = np.asarray(prompt, dtype=np.int32)
        return any(starts_with(entry.tokens, ids) for entry in self.entries.values())

    def fits(self, size: int) -> bool:
        """Whether an entry of ``size`` bytes can be kept at all (alone, it fits the bound)."""
        return size <= self.max_bytes

    def add(self, entry: PromptEntry) -> list[str]:
        """Record a written entry; returns the names of entries to delete now: those it supersedes (shorter prompts
        it starts with: a conversation's earlier turns, loadable from it) and, least recently used first, those that
        no longer fit under the bound. Never the new entry itself while it fits the bound alone."""
        doomed = [other.name for other in self.entries.values()
                  if other.name != entry.name and starts_with(entry.tokens, other.tokens)]
        for name in doomed:
            del self.entries[name]
        self.entries[entry.name] = entry
        return doomed + self.evictions(keep=entry.name)

    def evictions(self, keep: str | None = None) -> list[str]:
        """Least recently used entries removed until the rest fit under the bound (``keep`` is never chosen)."""
        total = self.total_bytes
        evicted: list[str] = []
        for entry in sorted(self.entries.values(), key=lambda e: e.last_use):
            if total <= self.max_bytes:
                break
            if entry.name != keep:
                evicted.append(entry.name)
                total -= entry.size
        for name in evicted:
            del self.entries[name]
        return evicted

    def touch(self, name: str, now: float) -> None:
        """The entry was used (loaded) at ``now``: it is the last to be evicted."""
        if name in self.entries:
            self.entries[name].last_use = now

    def remove(self, name: str) -> None:
        self.entries.pop(name, None)
