"""Scripted runners for the engine tests: the "model" is a rule (next token = fed token + 1), so every expected
sequence is known exactly. Used by test_engine, test_backend, test_prefix_reuse, test_prefix_sharing,
test_speculative, test_kv_memory and test_cache_reuse."""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import torch

from qwen_stream.engine.runners.base import KVShift, SeqChunk, check_kv_shift

VOCAB = 64


class CountingRunner:
    """Next token = (last fed token + 1) % VOCAB; remembers every batch it saw and which slots were freed."""

    name = "scripted"
    vocab_size = VOCAB

    def __init__(self, max_slots: int = 4, max_seq_len: int = 64, step_delay: float = 0.0) -> None:
        self.max_slots = max_slots
        self.max_seq_len = max_seq_len
        self.batches: list[list[SeqChunk]] = []
        self.freed: list[int] = []
        self.step_delay = step_delay
        self.lengths: dict[int, int] = {}

    def forward(self, chunks: Sequence[SeqChunk]) -> torch.Tensor:
        self.batches.append(list(chunks))
        for chunk in chunks:
            if self.lengths.get(chunk.slot, 0) != chunk.start_pos:
                raise AssertionError(f"slot {chunk.slot} fed at {chunk.start_pos}, has {self.lengths.get(chunk.slot)}")
            self.lengths[chunk.slot] = chunk.start_pos + len(chunk.token_ids)
        rows = [c for c in chunks if c.want_logits]
        logits = torch.zeros(len(rows), VOCAB)
        for i, chunk in enumerate(rows):
            logits[i, (chunk.token_ids[-1] + 1) % VOCAB] = 10.0
        if self.step_delay:
            time.sleep(self.step_delay)
        return logits

    def free_slot(self, slot: int) -> None:
        self.freed.append(slot)
        self.lengths[slot] = 0

    def close(self) -> None:
        pass


class RewindingRunner:
    """Next token = fed token + 1 (a row for every position asked for); checks every chunk continues (or rewinds
    into) what its slot holds. The speculative-decoding tests use it too."""

    name = "scripted-rewind"
    vocab_size = VOCAB
    can_rewind = True

    def __init__(self, max_slots: int = 2, max_seq_len: int = 128) -> None:
        self.max_slots, self.max_seq_len = max_slots, max_seq_len
        self.held: dict[int, list[int]] = {}
        self.fed: list[SeqChunk] = []

    def forward(self, chunks: Sequence[SeqChunk]) -> torch.Tensor:
        rows = []
        for chunk in chunks:
            held = self.held.setdefault(chunk.slot, [])
            assert chunk.start_pos <= len(held), "a gap in the slot's KV"
            self.held[chunk.slot] = held[:chunk.start_pos] + list(chunk.token_ids)
            self.fed.append(SeqChunk(chunk.slot, list(chunk.token_ids), chunk.start_pos, chunk.want_logits,
                                     chunk.n_logits))
            for token in chunk.token_ids[len(chunk.token_ids) - chunk.logit_rows:]:  # a row per position asked for
                row = torch.zeros(VOCAB)
                row[(token + 1) % VOCAB] = 10.0
                rows.append(row)
        return torch.stack(rows) if rows else torch.zeros(0, VOCAB)

    def free_slot(self, slot: int) -> None:
        self.held[slot] = []

    def close(self) -> None:
        pass


class SavingRunner(RewindingRunner):
    """A RewindingRunner whose slot states can be saved and loaded (the prompt cache on disk): a state is the
    slot's token ids as int32 bytes, so a load is checked the way llama.cpp checks its own (length, layout)."""

    name = "scripted-saving"
    state_layout = "scripted: int32 token ids"

    def __init__(self, weights_path: str, max_slots: int = 2, max_seq_len: int = 1024) -> None:
        super().__init__(max_slots, max_seq_len)
        self.weights_path = weights_path  # any file: its bytes key the cache
        self.loads: list[tuple[int, int, int]] = []  # (slot, length, keep) of every load
        self.load_tries = 0  # loads asked for, refused ones included

    def save_state(self, slot: int) -> memoryview:
        return memoryview(np.asarray(self.held.get(slot, []), dtype="<i4").tobytes())

    def load_state(self, slot: int, data: memoryview | bytes, length: int, keep: int | None = None) -> None:
        self.load_tries += 1
        tokens = np.frombuffer(data, dtype="<i4").tolist()
        self.held[slot] = []
        if len(tokens) != length:
            raise RuntimeError(f"a state of {len(tokens)} positions, {length} expected")
        keep = length if keep is None else keep
        self.held[slot] = tokens[:keep]
        self.loads.append((slot, length, keep))


class ShiftingRunner(RewindingRunner):
    """A RewindingRunner that also moves cached runs (cache reuse): ``held`` is rearranged as a KVShift says, with
    fills written in (``can_fill_kv``); every shift applied is in ``shifts``."""

    name = "scripted-shift"
    can_shift_kv = True

    def __init__(self, max_slots: int = 2, max_seq_len: int = 128, *, fills: bool = True) -> None:
        super().__init__(max_slots, max_seq_len)
        self.can_fill_kv = fills
        self.shifts: list[KVShift] = []

    def shift_kv(self, shift: KVShift) -> None:
        held = self.held.setdefault(shift.slot, [])
        check_kv_shift(shift, len(held), self.max_seq_len)
        assert self.can_fill_kv or not shift.fills, "fills on a runner without can_fill_kv"
        pieces = [(r.dst, held[r.src:r.src + r.length]) for r in shift.runs]
        pieces += [(f.start_pos, list(f.token_ids)) for f in shift.fills]
        self.held[shift.slot] = held[:shift.keep] + [t for _, tokens in sorted(pieces) for t in tokens]
        self.shifts.append(shift)
