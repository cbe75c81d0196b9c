"""The tokens a sequence's penalties look at, kept sparse: each distinct id once, with how often it was generated.

Penalties only ever touch tokens already in the prompt or the output, a few hundred of a 151,936-token vocabulary,
so a step gathers and rewrites those entries of a row of logits instead of making passes over the whole row.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch


class TokenHistory:
    """Distinct ids seen in prompt + output (first seen first) and their output counts (0 for prompt-only ids)."""

    __slots__ = ("_counts", "_ids", "_n", "_slot", "_vocab")

    def __init__(self, prompt_ids: Iterable[int], vocab_size: int) -> None:
        distinct = list(dict.fromkeys(i for i in prompt_ids if 0 <= i < vocab_size))
        capacity = max(16, 2 * len(distinct))
        self._ids = torch.zeros(capacity, dtype=torch.long)
        self._counts = torch.zeros(capacity, dtype=torch.float32)
        self._ids[:len(distinct)] = torch.tensor(distinct, dtype=torch.long)
        self._slot = {token: slot for slot, token in enumerate(distinct)}
        self._n = len(distinct)
        self._vocab = vocab_size

    def __len__(self) -> int:
        return self._n

    def record(self, token_id: int, times: int = 1) -> None:
        """O(1): one more occurrence of token_id in the output (a negative ``times`` takes some back)."""
        if not 0 <= token_id < self._vocab:
            return
        slot = self._slot.get(token_id)
        if slot is None:
            slot = self._append(token_id)
        self._counts[slot] += times

    def _append(self, token_id: int) -> int:
        if self._n == self._ids.numel():  # full: double, so appends stay O(1) amortised
            self._ids = torch.cat([self._ids, torch.zeros_like(self._ids)])
            self._counts = torch.cat([self._counts, torch.zeros_like(self._counts)])
        slot = self._n
        self._ids[slot] = token_id
        self._slot[token_id] = slot
        self._n += 1
        return slot

    def tensors(self, extra: Sequence[int] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """(ids [n], counts [n]); ``extra``: tokens counted as generated on top (drafts before a checked position)."""
        ids, counts = self._ids[:self._n], self._counts[:self._n]
        if not extra:
            return ids, counts
        extra = [t for t in extra if 0 <= t < self._vocab]
        more = [t for t in dict.fromkeys(extra) if t not in self._slot]
        ids = torch.cat([ids, torch.tensor(more, dtype=torch.long)])
        counts = torch.cat([counts, torch.zeros(len(more))])
        slots = {**self._slot, **{t: self._n + j for j, t in enumerate(more)}}
        for token in extra:
            counts[slots[token]] += 1
        return ids, counts

    def dense(self, vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(seen [vocab] bool, counts [vocab] float32): the same history as full rows, for the per-row reference."""
        ids, counts = self.tensors()
        seen = torch.zeros(vocab_size, dtype=torch.bool)
        seen[ids] = True
        dense_counts = torch.zeros(vocab_size, dtype=torch.float32)
        dense_counts[ids] = counts
        return seen, dense_counts
