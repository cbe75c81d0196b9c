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
    # A prompt chunk the runner may compute on its fast prefill (int8 GEMMs: engine/sched/prefill_path.py decides),
    # whose K/V then differ from its own kernels' in the low bits. Runners without one ignore it.
    fast: bool = False

    @property
    def logit_rows(self) -> int:
        """How many rows of ``forward``'s result this chunk owns."""
        return self.n_logits if self.want_logits else 0


@dataclass(slots=True, frozen=True)
class KVRun:
    """``length`` cached positions of a slot starting at ``src`` move to start at ``dst`` (keys re-rotated by RoPE
    for the new positions: a shift, not a recomputation)."""

    src: int
    dst: int
    length: int


@dataclass(slots=True, frozen=True)
class KVShift:
    """Cache reuse past a slot's shared prefix (llama-server's ``--cache-reuse``), applied before the forward.

    The slot keeps positions [0, ``keep``); ``runs`` (in order, their sources inside what the slot holds past
    ``keep``) move to their new places; every cell past ``keep`` no run takes is dropped; ``fills`` (prompt tokens
    at their positions, no logits) are computed in the gaps the runs leave before them. Kept prefix, fills and runs
    then cover [0, ``served``) once each: the slot holds that much of the new prompt."""

    slot: int
    keep: int
    runs: tuple[KVRun, ...]
    fills: tuple[SeqChunk, ...] = ()

    @property
    def served(self) -> int:
        return self.keep + sum(r.length for r in self.runs) + sum(len(f.token_ids) for f in self.fills)


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
    # Optional ``shift_kv(shift: KVShift) -> None`` with ``can_shift_kv: bool`` (False if absent): move cached runs
    # of a slot's KV to new positions (cache reuse, engine/sched/cache_reuse.py); ``can_fill_kv: bool`` (False if
    # absent): ``shift.fills`` may be non-empty, i.e. tokens can be computed in a gap below cells the slot holds.

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


def check_kv_shift(shift: KVShift, held: int, max_seq_len: int) -> None:
    """ValueError unless ``shift`` applies to its slot holding ``held`` positions: runs in order inside the held
    part past ``keep``, and the kept prefix, fills and the runs' new places covering [0, served) once each, within
    the window. Every runner with ``shift_kv`` checks through here."""
    if not 0 <= shift.keep <= held:
        raise ValueError(f"slot {shift.slot} holds {held} positions; cannot keep {shift.keep}")
    edge = shift.keep
    for run in shift.runs:
        if run.length < 1 or run.src < edge or run.src + run.length > held:
            raise ValueError(f"slot {shift.slot}: run {run} is not in order inside positions [{edge}, {held})")
        edge = run.src + run.length
    if any(fill.slot != shift.slot or fill.want_logits or not fill.token_ids for fill in shift.fills):
        raise ValueError(f"slot {shift.slot}: a fill must be tokens of that slot without logits")
    pieces = sorted([(r.dst, r.length) for r in shift.runs] + [(f.start_pos, len(f.token_ids)) for f in shift.fills])
    edge = shift.keep
    for start, length in pieces:
        if start != edge:
            raise ValueError(f"slot {shift.slot}: the shift leaves position {min(start, edge)} covered "
                             f"{'never' if start > edge else 'twice'}")
        edge += length
    if edge > max_seq_len:
        raise ValueError(f"slot {shift.slot}: the shift reaches position {edge}, past max_seq_len {max_seq_len}")
