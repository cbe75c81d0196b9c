"""Which decoding sequences get drafted tokens this step, from where, and how many: the scheduler's speculation.

Two sources, the cheaper first (drafting.py and draft_model.py say how each works):

1. prompt lookup: free to find, so plan_drafts weighs only the longer forward against what the drafts yield;
2. a draft model (optional), for the sequences lookup leaves without drafts: its forwards cost time too, so
   plan_drafts adds their measured price, and with many streams (a compute-bound batch, where each extra token of
   the target's forward costs almost as much as a plain token) it drafts nothing.

Each sequence keeps one :class:`~qwen_stream.engine.spec.drafting.DraftRate` per source: lookup's acceptance (high on
edits, low on free text) says nothing of a draft model's.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from qwen_stream.engine.runners.base import SeqChunk
from qwen_stream.engine.spec.drafting import DraftRate, SpeculationConfig, StepCost, ngram_draft, plan_drafts

if TYPE_CHECKING:
    from qwen_stream.engine.request import ScheduledBatch, Sequence
    from qwen_stream.engine.spec.draft_model import ModelDrafter

logger = logging.getLogger(__name__)

# Where a draft model's acceptance starts before a sequence has any: Qwen2.5-Coder 0.5B drafting for the 1.5B agrees
# on most tokens of an answer, and its first miss tends to come a few tokens in.
MODEL_PRIOR_FIRST = 0.7
MODEL_PRIOR_NEXT = 0.7


class Speculator:
    """Adds drafts to a scheduled batch (``add_drafts``) and learns from their checks (``record``)."""

    def __init__(self, config: SpeculationConfig, max_model_len: int, drafter: ModelDrafter | None = None) -> None:
        self.config = config
        self.max_model_len = max_model_len
        self.drafter = drafter
        # forward time by tokens fed, measured by the core: what drafting costs on this machine (drafting.py)
        self.step_cost = StepCost(config.step_tokens)
        self.draft_rate = DraftRate()  # every lookup draft this engine checked: where a new sequence's rate starts
        self.model_rate = DraftRate(MODEL_PRIOR_FIRST, MODEL_PRIOR_NEXT, MODEL_PRIOR_FIRST, MODEL_PRIOR_NEXT)

    def start(self, seq: Sequence) -> None:
        """A new sequence speculates, starting from what this engine's text has been like lately."""
        seq.drafting = self.draft_rate.successor()
        if self.drafter is not None:
            seq.model_drafting = self.model_rate.successor()

    def add_drafts(self, batch: ScheduledBatch) -> None:
        """Extend decode chunks with the drafted tokens worth checking this step."""
        fed = sum(len(c.token_ids) for c in batch.chunks)
        decoding = [(seq, chunk) for seq, chunk in zip(batch.owners, batch.chunks, strict=True)
                    if seq.drafting is not None and not seq.in_prefill]
        for seq, _ in decoding:
            seq.draft, seq.draft_from_model = [], False
        found = [self._lookup(seq) if fed < self.config.step_tokens else [] for seq, _ in decoding]
        counts = [0] * len(decoding)
        if any(found):
            counts = plan_drafts([seq.drafting for seq, _ in decoding if seq.drafting],
                                 [len(draft) for draft in found], fed=fed, sampled=len(batch.sampled),
                                 cost=self.step_cost, max_tokens=self.config.step_tokens,
                                 min_gain=self.config.min_gain)
        expected = float(len(batch.sampled))
        for (seq, chunk), draft, n in zip(decoding, found, counts, strict=True):
            if seq.drafting is not None:
                expected += sum(seq.drafting.gain(j) for j in range(1, n + 1))
                if n:
                    _extend(seq, chunk, draft[:n])
                else:
                    seq.drafting.rest()
        if self.drafter is not None:
            left = [(seq, chunk) for (seq, chunk), n in zip(decoding, counts, strict=True) if n == 0]
            self._add_model_drafts(left, fed + sum(counts), expected)

    def record(self, seq: Sequence, drafted: int, accepted: int) -> None:
        """A check kept ``accepted`` of seq's ``drafted`` tokens."""
        if seq.draft_from_model and seq.model_drafting is not None:
            seq.model_drafting.update(drafted, accepted)
            self.model_rate.update(drafted, accepted)
        elif seq.drafting is not None:
            seq.drafting.update(drafted, accepted)
            self.draft_rate.update(drafted, accepted)

    def _add_model_drafts(self, candidates: list[tuple[Sequence, SeqChunk]], fed: int, expected: float) -> None:
        """Draft-model tokens for the sequences lookup left without drafts, where their cost pays."""
        drafter = self.drafter
        candidates = [(s, c) for s, c in candidates if s.model_drafting is not None and s.slot < drafter.max_slots
                      ] if drafter is not None else []
        if drafter is None or not candidates:
            return
        histories = [seq.prompt_ids + seq.output_ids for seq, _ in candidates]
        rooms = [self._room(seq, self.config.model_max_draft) for seq, _ in candidates]
        catch_ups = [drafter.catch_up(seq.slot, h) for (seq, _), h in zip(candidates, histories, strict=True)]
        rates = [seq.model_drafting for seq, _ in candidates if seq.model_drafting is not None]
        counts = plan_drafts(rates, rooms, fed=fed, sampled=expected, cost=self.step_cost,
                             max_tokens=self.config.step_tokens, min_gain=self.config.min_gain,
                             drafting_cost=lambda n: drafter.seconds(n, catch_ups))
        for rate, n in zip(rates, counts, strict=True):
            if n == 0:
                rate.rest()
        wants = [(seq.slot, h, n) for (seq, _), h, n in zip(candidates, histories, counts, strict=True) if n > 0]
        if not wants:
            return
        try:
            drafts = drafter.propose(wants)
        except Exception:  # a failed draft costs this step its drafts, never a request
            logger.exception("the draft model failed; drafting nothing this step")
            drafter.reset()
            return
        chosen = [(seq, chunk) for (seq, chunk), n in zip(candidates, counts, strict=True) if n > 0]
        for (seq, chunk), draft in zip(chosen, drafts, strict=True):
            _extend(seq, chunk, draft)
            seq.draft_from_model = True

    def _lookup(self, seq: Sequence) -> list[int]:
        """What prompt lookup proposes for seq (see ``_room``)."""
        room = self._room(seq, self.config.max_draft)
        if room <= 0:
            return []
        return ngram_draft(seq.prompt_ids + seq.output_ids, room, ngram_max=self.config.ngram_max,
                           ngram_min=self.config.ngram_min)

    def _room(self, seq: Sequence, most: int) -> int:
        """Drafts seq may take: never past its token limit or the context, and none for a sequence whose grammar
        checks one token at a time."""
        if seq.sampling.matcher is not None:
            return 0
        return max(0, min(most, seq.params.max_new_tokens - len(seq.output_ids) - 1,
                          self.max_model_len - seq.num_tokens))


def _extend(seq: Sequence, chunk: SeqChunk, draft: list[int]) -> None:
    seq.draft = draft
    chunk.token_ids.extend(draft)
    chunk.n_logits = 1 + len(draft)
