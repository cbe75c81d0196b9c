"""The contract between the scheduler and whatever computes logits (PyTorch, llama.cpp, ...)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch


@dataclass(slots=True)
class SeqChunk:
    """Tokens of one sequence to feed this step.

    A decode step feeds one token; a prefill feeds the prompt (or a chunk of it). ``start_pos`` is the
    position of ``token_ids[0]``: everything before it is already in the slot's KV cache.
    """

    slot: int
    token_ids: list[int]
    start_pos: int
    want_logits: bool = True  # False for a prefill chunk that is not the prompt's last
    # With want_logits: logits rows for the chunk's last n_logits positions (1: the next token only). A speculative
    # step feeds [last token, drafts...] and needs a row after every one of them to check the drafts.
    n_logits: int = 1
    # A pooled request's prefill chunk (embeddings): the runner's ``forward_with_hidden`` returns the final hidden
    # states of every token of it (after the model's last norm). Such a chunk never wants logits.
    hidden: bool = False

    @property
    def logit_rows(self) -> int:
        """How many rows of ``forward``'s result this chunk owns."""
        return self.n_logits if self.want_logits else 0


@runtime_checkable
class ModelRunner(Protocol):
    """Owns the weights and the KV cache; one instance per loaded model, driven by one thread."""

    name: str  # e.g. "torch-native", "torch-hf", "llamacpp"
    max_slots: int  # how many sequences can hold a KV cache at once
    max_seq_len: int  # positions per slot (the context window we serve)
    vocab_size: int  # width of the logits rows
    # Optional ``can_rewind: bool`` (False if absent): whether a chunk may start before the slot's cached length,
    # replacing its tail. Runners that can let the scheduler keep a finished slot's KV and reuse its prefix.
    # Optional ``copy_prefix(src: int, dst: int, length: int) -> None``: make slot dst hold the first ``length``
    # positions of slot src's KV (dst's old content is dropped). With it, concurrent requests that share a prompt
    # prefix (a system prompt) compute it once; the copy must be valid for the very next ``forward``.
    # Optional ``forward_with_hidden(chunks) -> tuple[Tensor, list[Tensor]]``: ``forward``'s logits for the chunks
    # that want them, and for each chunk with ``hidden`` set (in chunk order) its final hidden states, float32
    # [len(token_ids), width]. Runners with it serve embeddings (engine/pooling.py); ``embedding_width`` says the
    # width. Optional ``can_generate: bool`` (True if absent): False for a runner with no logits at all (an
    # encoder). Optional ``whole_prompts: bool`` (False if absent): True where a prompt cannot be split over steps
    # (bidirectional attention): the scheduler then feeds each prompt in one chunk.
    # Optional ``save_state(slot) -> memoryview`` and ``load_state(slot, data, length, keep=None)`` with
    # ``state_layout: str`` and ``weights_path``: a slot's KV as bytes and back, in this or a later process with the
    # same weights and layout (llama.cpp). Runners with them can keep a prompt cache on disk (engine/prompt_cache);
    # a failed load raises and leaves the slot empty.

    def forward(self, chunks: Sequence[SeqChunk]) -> torch.Tensor:
        """Run all chunks as one batch; return float32 logits [n, vocab_size]: for each chunk whose
        ``want_logits`` is set, rows for its last ``n_logits`` tokens in position order, chunks in chunk order."""
        ...

    def free_slot(self, slot: int) -> None:
        """Forget the slot's KV cache so a new sequence can use it."""
        ...

    def close(self) -> None:
        """Release native resources (idempotent)."""
        ...


def check_prefix_copy(src: int, dst: int, length: int, src_length: int) -> None:
    """ValueError unless slot dst may take the first ``length`` positions of slot src, which holds ``src_length``.

    Used by kv_cache.SlotTable.copy_prefix, which every runner that copies goes through."""
    if src == dst:
        raise ValueError(f"cannot copy slot {src} onto itself")
    if isinstance(length, bool) or not isinstance(length, int) or not 0 < length <= src_length:
        raise ValueError(f"slot {src} holds {src_length} positions; cannot copy {length!r} of them")
