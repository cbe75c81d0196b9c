"""A step's chunks as llama.cpp batches: the per-token arrays, which chunks share one ``llama_decode``, and a
``llama_batch`` over numpy buffers we own (filled with vectorised writes). Used by the llama.cpp runner only."""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from types import ModuleType

import numpy as np

from qwen_stream.engine.runners.base import SeqChunk


class BatchBuffers:
    """A ``llama_batch`` whose arrays are numpy buffers we own, so a step is filled with vectorised writes.

    ``llama_batch_init`` would allocate one little seq-id array per token, which can only be filled token by
    token from Python; here every token's seq-id pointer points into one shared table ``[0, 1, ..., n_seq-1]``.
    """

    def __init__(self, ll: ModuleType, capacity: int, n_seq: int) -> None:
        self.capacity = capacity
        self.token = np.zeros(capacity, dtype=np.int32)
        self.pos = np.zeros(capacity, dtype=np.int32)
        self.n_seq_id = np.ones(capacity, dtype=np.int32)  # each token belongs to exactly one sequence
        self.logits = np.zeros(capacity, dtype=np.int8)
        self.seq_table = np.arange(n_seq, dtype=np.int32)  # seq_table[s] == s
        self.seq_ptr = np.zeros(capacity, dtype=np.uintp)  # per token: &seq_table[slot]
        self._seq_base = self.seq_table.ctypes.data
        batch = ll.llama_batch()
        batch.n_tokens = 0
        batch.token = self.token.ctypes.data_as(ctypes.POINTER(ll.llama_token))
        batch.embd = ctypes.POINTER(ctypes.c_float)()  # NULL: we feed token ids, not embeddings
        batch.pos = self.pos.ctypes.data_as(ctypes.POINTER(ll.llama_pos))
        batch.n_seq_id = self.n_seq_id.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))
        batch.seq_id = ctypes.cast(self.seq_ptr.ctypes.data, ctypes.POINTER(ctypes.POINTER(ll.llama_seq_id)))
        batch.logits = self.logits.ctypes.data_as(ctypes.POINTER(ctypes.c_int8))
        self.batch = batch

    def fill(self, tokens: np.ndarray, pos: np.ndarray, seq: np.ndarray, want: np.ndarray) -> None:
        """Load ``len(tokens) <= capacity`` tokens (int32 arrays, ``want`` int8) into the batch."""
        n = len(tokens)
        self.token[:n] = tokens
        self.pos[:n] = pos
        self.seq_ptr[:n] = self._seq_base + seq.astype(np.uintp) * self.seq_table.itemsize
        self.logits[:n] = want
        self.batch.n_tokens = n


def decode_groups(chunks: Sequence[SeqChunk]) -> list[tuple[list[int], bool]]:
    """The step's llama_decode groups (chunk indices in slot order) and whether each runs in embeddings mode.

    llama.cpp splits a batch over per-slot KV streams into micro-batches of consecutive sequence ids, so chunks go in
    slot order: 16 decodes in arrival order ran as several small graphs, 1.9x slower (Qwen-1.5B, 470 vs 251 ms a
    step). Embedding chunks need every token as an output; the chunks whose every token is an output anyway (decodes,
    drafted checks) ride in the same decode, so a step of streams and embeddings reads the weights once; a prompt
    chunk wanting one logits row runs in a plain decode of its own (all-outputs would cost it an lm_head per token).
    """
    by_slot = sorted(range(len(chunks)), key=lambda i: chunks[i].slot)
    if not any(c.hidden for c in chunks):
        return [(by_slot, False)]
    together = [i for i in by_slot if chunks[i].hidden or len(chunks[i].token_ids) == chunks[i].logit_rows]
    apart = [i for i in by_slot if i not in set(together)]
    return [(group, embeddings) for group, embeddings in ((apart, False), (together, True)) if group]


def flatten(chunks: Sequence[SeqChunk]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Chunks -> per-token arrays (token, position, sequence id, wants-logits), in chunk order."""
    lens = np.fromiter((len(c.token_ids) for c in chunks), dtype=np.int64, count=len(chunks))
    total = int(lens.sum())
    starts = np.fromiter((c.start_pos for c in chunks), dtype=np.int64, count=len(chunks))
    slots = np.fromiter((c.slot for c in chunks), dtype=np.int32, count=len(chunks))
    first_index = np.cumsum(lens) - lens  # where each chunk begins in the flat arrays
    tokens = np.fromiter((t for c in chunks for t in c.token_ids), dtype=np.int32, count=total)
    pos = (np.arange(total, dtype=np.int64) + np.repeat(starts - first_index, lens)).astype(np.int32)
    seq = np.repeat(slots, lens)
    want = np.zeros(total, dtype=np.int8)
    for c, first, n in zip(chunks, first_index, lens, strict=True):
        if c.want_logits:  # the chunk's last n_logits tokens (usually just the last one)
            want[first + n - c.n_logits:first + n] = 1
    return tokens, pos, seq, want
