"""Draft tokens from the text itself (prompt lookup), and how many to draft: pure functions, no model.

Speculative decoding guesses the next few tokens cheaply and lets the model check them all in one forward. An
answer that edits or quotes its prompt (rewrite this function with one name changed, fix this paragraph) repeats
long runs of it, so the cheapest guesser is the history: find the latest earlier place where the last few tokens
occurred, and propose what followed them there. This is HF's ``prompt_lookup_num_tokens`` and llama.cpp's
``--spec-type ngram-simple`` (llama.cpp searches backwards from the end, as we do: the latest match is the most
likely to continue the same way).

A wrong draft costs compute (every drafted position is a row of the forward), so each sequence keeps a
:class:`DraftLength`: it grows while drafts are accepted whole, shrinks to what was accepted otherwise, and pauses
drafting for a while (longer each time) when acceptance stays low. :func:`step_draft_budget` caps the drafts of a
whole step once the batch is wide enough that the step is compute-bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_NGRAM_MAX = 4  # longest trailing n-gram looked up first (fewer false matches)
DEFAULT_NGRAM_MIN = 2  # shortest: a single token matches too often to be worth a forward row
DEFAULT_MAX_DRAFT = 8
DEFAULT_STEP_TOKENS = 16


@dataclass(slots=True, frozen=True)
class SpeculationConfig:
    """Speculative decoding from the text itself: at most ``max_draft`` drafted tokens per sequence and step, and
    none once the step already feeds ``step_tokens`` tokens (the batch is then compute-bound)."""

    max_draft: int = DEFAULT_MAX_DRAFT
    step_tokens: int = DEFAULT_STEP_TOKENS
    ngram_max: int = DEFAULT_NGRAM_MAX
    ngram_min: int = DEFAULT_NGRAM_MIN

    def __post_init__(self) -> None:
        if self.max_draft < 1 or self.step_tokens < 1 or not 1 <= self.ngram_min <= self.ngram_max:
            raise ValueError(f"bad speculation settings: {self}")

    def new_length(self) -> DraftLength:
        return DraftLength(max_len=self.max_draft, length=min(4, self.max_draft))


def ngram_draft(history: Sequence[int] | np.ndarray, max_tokens: int, *, ngram_max: int = DEFAULT_NGRAM_MAX,
                ngram_min: int = DEFAULT_NGRAM_MIN) -> list[int]:
    """Up to ``max_tokens`` tokens that followed the latest earlier occurrence of the history's last n-gram.

    ``history`` is everything the sequence holds (prompt + answer so far, ending with the token about to be fed).
    n goes from ``ngram_max`` down to ``ngram_min``; the first n with an earlier match wins. An empty list when
    nothing matches or ``max_tokens`` is 0.
    """
    if max_tokens < 0 or ngram_min < 1 or ngram_max < ngram_min:
        raise ValueError(f"need max_tokens >= 0 and 1 <= ngram_min <= ngram_max, got {max_tokens}, "
                         f"{ngram_min}, {ngram_max}")
    tokens = np.asarray(history, dtype=np.int64)
    total = len(tokens)
    if max_tokens == 0:
        return []
    for n in range(min(ngram_max, total - 1), ngram_min - 1, -1):
        start = _latest_match(tokens, n)
        if start is not None:
            follow = start + n  # the draft is what came after the match, up to the history's end
            return tokens[follow:follow + max_tokens].tolist()
    return []


def _latest_match(tokens: np.ndarray, n: int) -> int | None:
    """Start of the latest occurrence of the last n tokens that ends before the last token (None if none)."""
    total = len(tokens)
    if total - n - 1 < 0:
        return None
    # windows[j] = tokens[j:j + n] for every start j with at least one token after the window
    windows = np.lib.stride_tricks.sliding_window_view(tokens[:total - 1], n)
    hits = np.flatnonzero((windows == tokens[total - n:]).all(axis=1))
    return int(hits[-1]) if len(hits) else None


@dataclass(slots=True)
class DraftLength:
    """How many tokens one sequence drafts next step, adapted to how its drafts fare.

    - all drafted tokens accepted: draft more next time (up to ``max_len``);
    - some rejected: next time draft one more than were accepted;
    - the acceptance rate (a running average) falls under ``min_rate``: stop drafting for ``pause`` steps, a pause
      that doubles each time it happens again (up to ``max_pause``) and resets once drafts pay again.
    """

    max_len: int
    length: int = 4
    min_rate: float = 0.3
    rate: float = 1.0  # exponential average of accepted / drafted
    pause: int = 0  # steps left without drafting
    next_pause: int = 4
    max_pause: int = 64
    drafted: int = 0  # totals, for statistics
    accepted: int = 0

    def __post_init__(self) -> None:
        if self.max_len < 0:
            raise ValueError(f"max_len must be >= 0, got {self.max_len}")
        self.length = min(max(self.length, 1), max(self.max_len, 1))

    def wanted(self) -> int:
        """How many tokens to draft this step (0 while paused or disabled); counts down a pause."""
        if self.max_len == 0:
            return 0
        if self.pause > 0:
            self.pause -= 1
            return 0
        return self.length

    def update(self, drafted: int, accepted: int) -> None:
        """Record one verification: ``accepted`` of ``drafted`` tokens agreed with the model."""
        if not 0 <= accepted <= drafted:
            raise ValueError(f"accepted must be in [0, drafted], got {accepted} of {drafted}")
        if drafted == 0:
            return
        self.drafted += drafted
        self.accepted += accepted
        if accepted == drafted:
            self.length = min(self.max_len, self.length + max(1, self.length // 2))
        else:
            self.length = max(1, min(self.max_len, accepted + 1))
        self.rate = 0.7 * self.rate + 0.3 * (accepted / drafted)
        if self.rate < self.min_rate:
            self.pause, self.next_pause = self.next_pause, min(self.max_pause, 2 * self.next_pause)
            self.rate = 1.0  # judge the next drafts on their own
        elif accepted > 0:
            self.next_pause = 4


def step_draft_budget(n_decoding: int, step_tokens: int) -> int:
    """Draft tokens the whole step may add, given ``n_decoding`` sequences each feeding one token.

    On a CPU a forward of ``step_tokens`` rows costs about what one row does (the weights are read once); past
    that it is compute-bound and every extra row costs its share. Sixteen streams on 2 cores fill the step
    already, so they draft nothing; one stream may draft ``step_tokens - 1``.
    """
    if n_decoding < 0 or step_tokens < 0:
        raise ValueError(f"need n_decoding >= 0 and step_tokens >= 0, got {n_decoding}, {step_tokens}")
    return max(0, step_tokens - n_decoding)


def share_budget(wanted: Sequence[int], budget: int) -> list[int]:
    """Split a step's draft budget over sequences that want ``wanted[i]`` tokens each: round-robin, one token at
    a time, so no sequence's long draft starves the others. Returns how many each may draft."""
    if budget < 0 or any(w < 0 for w in wanted):
        raise ValueError("budget and wanted lengths must be >= 0")
    granted = [0] * len(wanted)
    left = budget
    while left > 0:
        progressed = False
        for i, w in enumerate(wanted):
            if left > 0 and granted[i] < w:
                granted[i] += 1
                left -= 1
                progressed = True
        if not progressed:
            break
    return granted
