"""Cache reuse on llama.cpp's KV cache: a slot's cached runs moved to new positions, and tokens computed in the gaps
before them (a ``KVShift``). Used by the llama.cpp runner only.

Moving is llama-server's ``--cache-reuse``: ``llama_memory_seq_rm`` drops the cells no run keeps and
``llama_memory_seq_add`` changes a run's positions; llama.cpp rotates those keys by RoPE for the new positions at
the next ``llama_decode`` (one pass over the cache, whatever moved). Filling is ours: llama.cpp decodes a sequence
only right after its last position, so tokens cannot go into a gap below cells the slot already holds. On the
unified cache they are decoded on a scratch sequence that shares the slot's cells before the gap, and their new
cells are then shared back with the slot (``llama_memory_seq_cp`` within one stream only adds a sequence id to
cells); the scratch sequence is emptied again. With one KV stream per slot that needs a copy of whole streams, so
there a runner only moves runs.
"""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

from qwen_stream.engine.runners.base import KVShift, SeqChunk


def drop_and_move(ll: ModuleType, mem: Any, shift: KVShift) -> None:
    """Drop the slot's cells past ``keep`` that no run takes, then move every run to its new positions."""
    slot, edge = shift.slot, shift.keep
    for run in shift.runs:
        if run.src > edge:
            ll.llama_memory_seq_rm(mem, slot, edge, run.src)
        edge = run.src + run.length
    ll.llama_memory_seq_rm(mem, slot, edge, -1)
    # Moves must never land on cells not yet moved: runs going right move last-first, then runs going left
    # first-first (runs are in order on both sides, so neither order crosses another run's current cells).
    for run in reversed(shift.runs):
        if run.dst > run.src:
            ll.llama_memory_seq_add(mem, slot, run.src, run.src + run.length, run.dst - run.src)
    for run in shift.runs:
        if run.dst < run.src:
            ll.llama_memory_seq_add(mem, slot, run.src, run.src + run.length, run.dst - run.src)


def fill_gap(ll: ModuleType, mem: Any, fill: SeqChunk, scratch: int,
             decode: Callable[[SeqChunk, int], None]) -> None:
    """Compute ``fill`` (tokens at their positions, in a gap of its slot's KV) with ``decode(chunk, seq_id)`` on the
    ``scratch`` sequence, which sees the slot's cells before the gap; the new cells then belong to the slot."""
    start, end = fill.start_pos, fill.start_pos + len(fill.token_ids)
    ll.llama_memory_seq_cp(mem, fill.slot, scratch, 0, start)
    try:
        decode(fill, scratch)
        ll.llama_memory_seq_cp(mem, scratch, fill.slot, start, end)
    finally:
        ll.llama_memory_seq_rm(mem, scratch, -1, -1)
