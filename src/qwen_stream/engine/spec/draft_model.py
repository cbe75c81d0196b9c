"""Draft tokens from a second, smaller model that shares the target's tokenizer (Qwen2.5-Coder 0.5B for the 1.5B).

Prompt lookup (drafting.py) drafts nothing on free text; a small model of the same family guesses most of the next
tokens there too, at a price: every drafted token costs a forward of the draft model. :class:`ModelDrafter` runs
that model on its own runner (its own llama.cpp context) with the target's slot layout: target slot ``s`` is draft
slot ``s``, and the draft slot holds the KV of the same tokens the target's slot holds.

Keeping the two in step is lazy: the drafter remembers which tokens each of its slots holds, and when asked to
draft for a sequence it feeds what that sequence's history has beyond the longest common prefix (the whole prompt
the first time; afterwards the tokens the last check accepted plus the target's own token). A chunk that starts
inside a slot's cached part makes the runner drop the cells past it (llama.cpp's ``llama_memory_seq_rm``), which
is how rejected drafts are rolled back. Then ``k`` greedy tokens per sequence come from ``k`` forwards, each
batched over every sequence still drafting (one draft decode per draft position, as llama.cpp's server does for
its slots). The drafts are checked by the target's ordinary verification (verify.py), so the text is the one
plain decoding gives.

What drafting costs is measured (:class:`~qwen_stream.engine.spec.drafting.StepCost` over the draft's forwards,
calibrated at start-up), so the planner (drafting.plan_drafts) weighs it against what the drafts should yield.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import torch

from qwen_stream.engine.runners.base import ModelRunner, SeqChunk
from qwen_stream.engine.spec.drafting import DEFAULT_STEP_TOKENS, StepCost

logger = logging.getLogger(__name__)

CALIBRATION_SIZES = (1, 2, 4, 8, 16)  # forward sizes timed at start-up: a draft step's width is one per sequence
# A draft stops at a token the draft model gives less than this probability (llama.cpp's --draft-p-min): such a
# token is mostly wrong, and each further token costs a draft forward and a row of the target's check.
DEFAULT_MIN_CONFIDENCE = 0.5


class ModelDrafter:
    """Greedy drafts from ``runner`` (a draft model's runner that can rewind a slot), slot for slot with the target.

    Not thread-safe: the engine thread alone calls it, between the target's forwards."""

    def __init__(self, runner: ModelRunner, *, max_tokens: int = DEFAULT_STEP_TOKENS, calibrate: bool = True,
                 min_confidence: float = DEFAULT_MIN_CONFIDENCE) -> None:
        if not getattr(runner, "can_rewind", False):
            raise ValueError(f"a draft model needs a runner that can rewind a slot; {runner.name} cannot")
        if not 0.0 <= min_confidence < 1.0:
            raise ValueError(f"min_confidence must be in [0, 1), got {min_confidence}")
        self.runner = runner
        self.min_confidence = min_confidence
        self.max_slots = runner.max_slots
        self.max_seq_len = runner.max_seq_len
        self.cost = StepCost(max_tokens)  # seconds of one draft forward by tokens fed
        self._held: list[list[int]] = [[] for _ in range(runner.max_slots)]  # tokens each slot's KV holds
        self.drafted = 0  # tokens proposed in total
        self.seconds_spent = 0.0  # in draft forwards, catching up included
        if calibrate:
            self.calibrate()

    def calibrate(self, sizes: Sequence[int] = CALIBRATION_SIZES) -> None:
        """Time forwards of each size on slot 0 (twice: the first runs cold), so the planner prices drafting from
        the first step on rather than refusing to draft because it has never measured it."""
        for _ in range(2):
            for n in sizes:
                if n <= min(self.max_seq_len, self.cost.max_tokens):
                    self._timed([SeqChunk(0, [0] * n, 0)])
                    self.runner.free_slot(0)
        self._held[0] = []

    def catch_up(self, slot: int, history: Sequence[int]) -> int:
        """How many tokens slot must be fed before its first draft: history past what it already holds (>= 1, since
        the history's last token's logits give the first draft)."""
        return len(history) - self._common(slot, history)

    def seconds(self, counts: Sequence[int], catch_ups: Sequence[int]) -> float:
        """Estimated seconds to draft ``counts[i]`` tokens for sequence i, which needs ``catch_ups[i]`` tokens fed
        first: one forward with every catch-up (it yields the first drafts), then one per further position."""
        first = sum(c for n, c in zip(counts, catch_ups, strict=True) if n > 0)
        total = self._estimate(first) if first else 0.0
        for position in range(2, max(counts, default=0) + 1):
            total += self._estimate(sum(1 for n in counts if n >= position))
        return total

    def propose(self, wants: Sequence[tuple[int, Sequence[int], int]]) -> list[list[int]]:
        """Greedy drafts: for each ``(slot, history, k)`` up to k tokens that follow ``history`` (the sequence's
        prompt and output so far). Fewer where the slot's window ends or the draft model is unsure (below
        ``min_confidence``; possibly none)."""
        drafts: list[list[int]] = [[] for _ in wants]
        chunks, owners = [], []
        for i, (slot, history, k) in enumerate(wants):
            start = self._common(slot, history)
            self._check_room(slot, history, k)
            if k > 0:
                chunks.append(SeqChunk(slot, list(history[start:]), start))
                owners.append(i)
                self._held[slot] = list(history)
        while chunks:
            logits = self._timed(chunks)  # [len(chunks), vocab]: one row per chunk, its last position's
            tokens, sure = self._choose(logits)
            next_chunks, next_owners = [], []
            for chunk, i, token, confident in zip(chunks, owners, tokens, sure, strict=True):
                if not confident:
                    continue
                drafts[i].append(int(token))
                slot, k = wants[i][0], min(wants[i][2], self.max_seq_len - len(wants[i][1]))
                if len(drafts[i]) < k:  # feed it to get the next one
                    next_chunks.append(SeqChunk(slot, [int(token)], chunk.start_pos + len(chunk.token_ids)))
                    next_owners.append(i)
                    self._held[slot].append(int(token))
            chunks, owners = next_chunks, next_owners
        self.drafted += sum(len(d) for d in drafts)
        return drafts

    def _choose(self, logits: torch.Tensor) -> tuple[list[int], list[bool]]:
        """Each row's greedy token, and whether the draft model gives it at least ``min_confidence``."""
        top = logits.max(dim=-1)
        if self.min_confidence <= 0.0:
            return top.indices.tolist(), [True] * len(logits)
        confidence = torch.exp(top.values - torch.logsumexp(logits, dim=-1))  # softmax's largest probability
        return top.indices.tolist(), (confidence >= self.min_confidence).tolist()

    def free_slot(self, slot: int) -> None:
        """The target forgot this slot's KV: forget the draft's too (memory, and a KV pool shared by slots)."""
        if self._held[slot]:
            self.runner.free_slot(slot)
            self._held[slot] = []

    def reset(self) -> None:
        """Forget every slot (after a failed draft forward, whose effect on the KV is unknown)."""
        for slot in range(self.max_slots):
            self.runner.free_slot(slot)
            self._held[slot] = []

    def close(self) -> None:
        self.runner.close()

    def _common(self, slot: int, history: Sequence[int]) -> int:
        """The longest prefix of history the slot holds, short of history's last token (that one is always fed)."""
        held, n = self._held[slot], min(len(self._held[slot]), len(history) - 1)
        i = 0
        while i < n and held[i] == history[i]:
            i += 1
        return i

    def _check_room(self, slot: int, history: Sequence[int], k: int) -> None:
        if not 0 <= slot < self.max_slots:
            raise ValueError(f"slot {slot} is not one of the draft model's {self.max_slots} slots")
        if not history or k < 0 or len(history) > self.max_seq_len:
            raise ValueError(f"cannot draft {k} tokens after {len(history)} in a {self.max_seq_len}-token window")

    def _timed(self, chunks: Sequence[SeqChunk]) -> torch.Tensor:
        started = time.perf_counter()
        logits = self.runner.forward(chunks)
        seconds = time.perf_counter() - started
        self.cost.record(sum(len(c.token_ids) for c in chunks), seconds)
        self.seconds_spent += seconds
        return logits

    def _estimate(self, n_tokens: int) -> float:
        """StepCost's estimate, in proportion past the sizes it keeps (a long catch-up is a prefill)."""
        most = self.cost.max_tokens
        return self.cost.estimate(n_tokens) if n_tokens <= most else self.cost.estimate(most) * n_tokens / most
