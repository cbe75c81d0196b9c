"""Slot bookkeeping shared by every runner, and the preallocated slot KV cache of the PyTorch runners.

A *slot* is one row of the cache that one sequence owns from its prefill until it finishes. Sequences at
different positions live side by side, so one batched decode step can serve all of them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from qwen_stream.engine.runners.base import SeqChunk, check_prefix_copy


class SlotTable:
    """How many positions each slot holds, and the checks every ``forward`` makes before touching tensors.

    ``allow_rewind`` says whether a chunk may start before the slot's current length (overwriting its tail):
    the native and llama.cpp caches can, the Hugging Face fallback cache cannot. Every runner (PyTorch native,
    PyTorch HF, llama.cpp) keeps its slots' lengths here, so these rules and messages exist once.
    """

    def __init__(self, max_slots: int, max_seq_len: int, *, allow_rewind: bool = True) -> None:
        if not isinstance(max_slots, int) or max_slots < 1:
            raise ValueError(f"max_slots must be an integer >= 1, got {max_slots!r}")
        if not isinstance(max_seq_len, int) or max_seq_len < 1:
            raise ValueError(f"max_seq_len must be an integer >= 1, got {max_seq_len!r}")
        self.max_slots = max_slots
        self.max_seq_len = max_seq_len
        self.allow_rewind = allow_rewind
        self.lengths = [0] * max_slots  # positions already in each slot's cache

    def check_slot(self, slot: int) -> None:
        if not isinstance(slot, int) or not 0 <= slot < self.max_slots:
            raise ValueError(f"slot {slot!r} is out of range: slot must be in [0, {self.max_slots})")

    def check(self, chunks: Sequence[SeqChunk], vocab_rows: int) -> None:
        """Raise ValueError (or TypeError) for any chunk the runner cannot run; touch nothing."""
        seen: set[int] = set()
        for chunk in chunks:
            if not isinstance(chunk, SeqChunk):
                raise TypeError(f"forward() takes SeqChunk items, got {type(chunk).__name__}")
            self.check_slot(chunk.slot)
            if chunk.slot in seen:
                raise ValueError(f"slot {chunk.slot} appears twice in one forward(); feed one chunk per sequence")
            seen.add(chunk.slot)
            self._check_span(chunk)
            self._check_ids(chunk.token_ids, vocab_rows)

    def _check_span(self, chunk: SeqChunk) -> None:
        n, start, held = len(chunk.token_ids), chunk.start_pos, self.lengths[chunk.slot]
        if n == 0:
            raise ValueError(f"chunk for slot {chunk.slot} has no tokens")
        if isinstance(chunk.n_logits, bool) or not isinstance(chunk.n_logits, int) or not 1 <= chunk.n_logits <= n:
            raise ValueError(f"chunk for slot {chunk.slot}: n_logits must be in [1, {n}], got {chunk.n_logits!r}")
        if not isinstance(start, int) or start < 0:
            raise ValueError(f"start_pos must be an integer >= 0, got {start!r}")
        if start + n > self.max_seq_len:
            raise ValueError(
                f"slot {chunk.slot}: start_pos {start} + {n} tokens = {start + n} exceeds max_seq_len "
                f"{self.max_seq_len}, the context window")
        if start > held:
            raise ValueError(f"slot {chunk.slot} holds {held} positions, so start_pos {start} would leave a gap")
        if start < held and start != 0 and not self.allow_rewind:
            raise ValueError(f"slot {chunk.slot} holds {held} positions; this runner cannot rewind to {start}")

    @staticmethod
    def _check_ids(token_ids: list[int], vocab_rows: int) -> None:
        low, high = min(token_ids), max(token_ids)
        if low < 0 or high >= vocab_rows:
            bad = low if low < 0 else high
            raise ValueError(f"token id {bad} is out of range for an embedding of {vocab_rows} rows")

    def advance(self, chunk: SeqChunk) -> None:
        self.lengths[chunk.slot] = chunk.start_pos + len(chunk.token_ids)

    def free(self, slot: int) -> None:
        self.check_slot(slot)
        self.lengths[slot] = 0

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """Check that dst may take the first ``length`` positions of src, and record that it holds them."""
        self.check_slot(src)
        self.check_slot(dst)
        check_prefix_copy(src, dst, length, self.lengths[src])
        self.lengths[dst] = length


class SlotKVCache:
    """Per layer, keys and values for every slot: ``k[layer]``, ``v[layer]``: [max_slots, n_kv_heads, capacity, head_dim].

    Sized to the work: ``capacity`` starts at ``initial_len`` positions and doubles (up to ``max_seq_len``) when a
    sequence needs more (``ensure``), so a chat that never goes past 300 tokens holds 512 positions per slot, not
    4,096. Zero-filled: positions past a sequence's length are masked out by attention, but zeros (not
    uninitialised memory, which may hold NaN) keep ``0 * value`` finite in masked rows.
    """

    def __init__(
        self,
        *,
        n_layers: int,
        max_slots: int,
        n_kv_heads: int,
        max_seq_len: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
        initial_len: int = 256,
    ) -> None:
        self.max_seq_len = max_seq_len
        self.capacity = max(1, min(max_seq_len, initial_len))
        shape = (max_slots, n_kv_heads, self.capacity, head_dim)
        self.k = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype, device=device) for _ in range(n_layers)]

    def ensure(self, length: int) -> None:
        """Grow every slot to hold at least ``length`` positions (doubling, at most max_seq_len); keeps the contents."""
        if length <= self.capacity:
            return
        new = min(self.max_seq_len, max(length, 2 * self.capacity))
        with torch.inference_mode():
            for cache in (self.k, self.v):
                for i, old in enumerate(cache):
                    grown = old.new_zeros((*old.shape[:2], new, old.shape[3]))
                    grown[:, :, :self.capacity] = old
                    cache[i] = grown  # the old tensor is freed layer by layer
        self.capacity = new

    @staticmethod
    def nbytes_for(
        *, n_layers: int, max_slots: int, n_kv_heads: int, max_seq_len: int, head_dim: int, dtype: torch.dtype
    ) -> int:
        """Bytes the cache would take, so a caller can size max_slots x max_seq_len before allocating."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        return 2 * n_layers * max_slots * n_kv_heads * max_seq_len * head_dim * itemsize

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (*self.k, *self.v))
