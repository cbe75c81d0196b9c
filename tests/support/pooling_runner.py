"""A scripted runner that also gives hidden states, so pooled requests can be checked to the last bit.

The "model": next token = fed token + 1 (logits row 10.0 there, 0 elsewhere); the hidden state of token t at
position p is ``[t, p, 1, 0, ...]`` (width WIDTH), so a mean, a first or a last row is known exactly. It keeps every
step's chunks, checks each chunk continues what its slot holds, and can rewind like the real runners.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import torch

from qwen_stream.engine.runners.base import SeqChunk

VOCAB = 64
WIDTH = 8


def hidden_row(token: int, position: int) -> list[float]:
    return [float(token), float(position), 1.0] + [0.0] * (WIDTH - 3)


class PoolingRunner:
    name = "scripted-pooling"
    vocab_size = VOCAB
    embedding_width = WIDTH
    can_rewind = True

    def __init__(self, max_slots: int = 4, max_seq_len: int = 256, step_delay: float = 0.0) -> None:
        self.max_slots = max_slots
        self.max_seq_len = max_seq_len
        self.step_delay = step_delay
        self.batches: list[list[SeqChunk]] = []
        self.lengths: dict[int, int] = {}
        self.freed: list[int] = []
        self.closed = False

    def forward(self, chunks: Sequence[SeqChunk]) -> torch.Tensor:
        return self.forward_with_hidden(chunks)[0]

    def forward_with_hidden(self, chunks: Sequence[SeqChunk]) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self.batches.append(list(chunks))
        rows: list[torch.Tensor] = []
        hidden: list[torch.Tensor] = []
        for chunk in chunks:
            held = self.lengths.get(chunk.slot, 0)
            if chunk.start_pos > held:
                raise AssertionError(f"slot {chunk.slot} fed at {chunk.start_pos}, holds {held}")
            self.lengths[chunk.slot] = chunk.start_pos + len(chunk.token_ids)
            for token in chunk.token_ids[len(chunk.token_ids) - chunk.logit_rows:]:
                row = torch.zeros(VOCAB)
                row[(token + 1) % VOCAB] = 10.0
                rows.append(row)
            if chunk.hidden:
                hidden.append(torch.tensor([hidden_row(t, chunk.start_pos + i) for i, t in enumerate(chunk.token_ids)]))
        if self.step_delay:
            time.sleep(self.step_delay)
        logits = torch.stack(rows) if rows else torch.zeros(0, VOCAB)
        return logits, hidden

    def free_slot(self, slot: int) -> None:
        self.freed.append(slot)
        self.lengths[slot] = 0

    def close(self) -> None:
        self.closed = True


class TextOnlyRunner(PoolingRunner):
    """The same model without hidden states (as the torch-hf runner): embeddings are refused at submit."""

    forward_with_hidden = None  # type: ignore[assignment]

    def forward(self, chunks: Sequence[SeqChunk]) -> torch.Tensor:
        return PoolingRunner.forward_with_hidden(self, chunks)[0]
