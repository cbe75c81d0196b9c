"""The engine's request records: a sequence as the scheduler tracks it, and what one step feeds the runner.

Plain data, apart from the code that acts on it (as nano-vllm's ``engine/sequence.py``): the scheduler, the
speculator and the step all import these, and none of them imports another for its records.
"""

from __future__ import annotations

import enum
import time
from dataclasses import dataclass, field
from typing import Any

from qwen_stream.engine.pooling import Pooler
from qwen_stream.engine.runners.base import KVShift, SeqChunk
from qwen_stream.engine.sample.per_sequence import SamplingState
from qwen_stream.engine.spec.drafting import DraftRate
from qwen_stream.types import SamplingParams


class SeqStatus(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    FINISHED = "finished"


@dataclass(slots=True, eq=False)
class Sequence:
    request_id: str
    prompt_ids: list[int]
    params: SamplingParams
    sampling: SamplingState
    stop_ids: frozenset[int]
    arrival_time: float = field(default_factory=time.perf_counter)
    status: SeqStatus = SeqStatus.WAITING
    slot: int = -1
    output_ids: list[int] = field(default_factory=list)
    num_computed: int = 0  # tokens already in the KV cache
    num_cached: int = 0  # prompt tokens found in the slot's KV at admission (prefix reuse)
    prefix_source: Sequence | None = None  # a running sequence whose KV prefix this one will copy...
    prefix_len: int = 0  # ... this many tokens of it, once the source has computed them
    seed: int = 0  # picks the random stream of each sampled position (verify.position_seed)
    drafting: DraftRate | None = None  # None: this sequence never speculates
    model_drafting: DraftRate | None = None  # its draft model's acceptance (None: no draft model)
    draft: list[int] = field(default_factory=list)  # the tokens drafted for this step
    draft_from_model: bool = False  # ... by the draft model (else by prompt lookup)
    pooler: Pooler | None = None  # an embedding request's pooled hidden states (engine/pooling.py)
    # The logits row after the whole prompt, as its last prefill chunk computed it (or as a slot kept it): kept with
    # the slot's KV when the sequence ends, so an exact repeat samples its first token from it instead of
    # recomputing anything (same row, same seed: the same text).
    prompt_logits: Any = None
    prompt_row_exact: bool = False  # ... and a cold prefill gives that row too (sched/slot_pool.py KeptRow)
    recalled: bool = False  # admitted onto a slot holding this whole prompt and its logits: no prefill at all
    # Leading KV positions exactly as a cold prefill computes them: whole grid chunks (sched/chunk_grid.py) computed
    # on exact positions, or reused from a slot that held them so. A multiple of the chunk size.
    exact_upto: int = 0

    @property
    def num_tokens(self) -> int:
        return len(self.prompt_ids) + len(self.output_ids)

    @property
    def in_prefill(self) -> bool:
        return self.num_computed < len(self.prompt_ids)

    @property
    def exact(self) -> bool:
        """Its answer must not depend on what the cache holds: it came with a seed of its own (not drawn)."""
        return self.params.seed is not None and not self.params.seed_drawn and not self.pooled

    @property
    def pooled(self) -> bool:
        """Prefilled and never sampled: an embedding or a score (params.pooling)."""
        return self.params.pooling is not None


@dataclass(slots=True, frozen=True)
class PrefixCopy:
    """Make slot ``dst`` hold the first ``length`` positions of slot ``src``'s KV (dst's old content is dropped)."""

    src: int
    dst: int
    length: int


@dataclass(slots=True, eq=False)
class PromptLoad:
    """Fill ``seq``'s slot from the saved prompt ``entry`` of the prompt cache on disk (``length`` positions), keeping
    its first ``keep`` (the prefix seq shares with it); applied by the step before the forward."""

    seq: Sequence
    entry: str
    length: int
    keep: int
    exact_upto: int = 0  # of what is kept, the leading positions a cold prefill computes bit for bit
    row_exact: bool = False  # the saved logits row (a recall) is a cold run's


@dataclass(slots=True)
class ScheduledBatch:
    """What one step feeds the runner; ``owners[i]`` fed ``chunks[i]``; ``sampled`` are the sequences that sample
    this step, in the order of their logits rows (``logit_rows`` says which rows are theirs)."""

    chunks: list[SeqChunk] = field(default_factory=list)
    owners: list[Sequence] = field(default_factory=list)
    sampled: list[Sequence] = field(default_factory=list)
    copies: list[PrefixCopy] = field(default_factory=list)  # to apply before the forward
    loads: list[PromptLoad] = field(default_factory=list)  # to apply before the copies and the forward
    shifts: list[KVShift] = field(default_factory=list)  # cache reuse: to apply before the copies and the forward
    # sequences sampling their first token from kept prompt logits, no chunk: last in ``sampled``, rows after the
    # forward's (see recall)
    recalled: list[Sequence] = field(default_factory=list)

    def add(self, seq: Sequence, chunk: SeqChunk) -> None:
        self.chunks.append(chunk)
        self.owners.append(seq)
        if chunk.want_logits and not seq.pooled:
            self.sampled.append(seq)

    def recall(self, seq: Sequence) -> None:
        """seq samples from its kept prompt logits this step; called after every chunk (and draft) is added, so
        its row comes after the forward's rows."""
        self.recalled.append(seq)
        self.sampled.append(seq)

    def drop(self, seq: Sequence) -> None:
        """Take seq's chunk (or recall) out of this step, before the forward (its saved prefix failed to load)."""
        kept = [i for i, owner in enumerate(self.owners) if owner is not seq]
        self.chunks = [self.chunks[i] for i in kept]
        self.owners = [self.owners[i] for i in kept]
        self.sampled = [s for s in self.sampled if s is not seq]
        self.recalled = [s for s in self.recalled if s is not seq]

    @property
    def empty(self) -> bool:
        return not self.chunks and not self.recalled and not self.shifts

    @property
    def hidden(self) -> list[tuple[Sequence, SeqChunk]]:
        """The chunks whose hidden states the runner returns (embedding requests), with their sequences."""
        return [(seq, chunk) for seq, chunk in zip(self.owners, self.chunks, strict=True) if chunk.hidden]

    def logit_rows(self) -> tuple[list[int], list[tuple[Sequence, int]]]:
        """The forward's logits rows of the sampled sequences (in order), and each score request's last row.
        Read after drafts are added: a drafted chunk owns 1 + len(draft) rows."""
        sampled: list[int] = []
        scored: list[tuple[Sequence, int]] = []
        row = 0
        for seq, chunk in zip(self.owners, self.chunks, strict=True):
            n = chunk.logit_rows
            if n and seq.pooled:
                scored.append((seq, row + n - 1))
            elif n:
                sampled.extend(range(row, row + n))
            row += n
        return sampled, scored
