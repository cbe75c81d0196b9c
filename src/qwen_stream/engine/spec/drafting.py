"""Draft tokens from the text itself (prompt lookup), and how many of them a step should check: no model here.

Speculative decoding guesses the next few tokens cheaply and lets the model check them all in one forward. An
answer that edits or quotes its prompt (rewrite this function with one name changed, fix this paragraph) repeats
long runs of it, so the cheapest guesser is the history: find the latest earlier place where the last few tokens
occurred, and propose what followed them there. This is HF's ``prompt_lookup_num_tokens`` and llama.cpp's
``--spec-type ngram-simple`` (llama.cpp searches backwards from the end, as we do: the latest match is the most
likely to continue the same way).

How many drafted tokens to check is a trade of expected tokens against step time, decided per step by
:func:`plan_drafts` from two things learned while serving:

- :class:`DraftRate`, per sequence: how likely its drafted tokens are to be accepted (its drafts' track record),
  so what the j-th drafted token yields on average.
- :class:`StepCost`, per engine: how long a forward of n tokens takes, measured on this machine's own steps. On a
  CPU it is far from linear and its shape depends on the CPU and the kernels (2-core Sapphire Rapids, Qwen-1.5B
  Q4_K_M: 1, 2, 4, 8, 16, 17, 32 tokens cost 1, 1.45, 2.0, 3.2, 3.5, 4.4, 5.0 times one token), so it is measured,
  not assumed.

A step checks the drafts that maximise expected tokens per second, and none unless that beats plain decoding by a
margin: free text with little to look up drafts almost nothing, an edit drafts as much as the step affords, and a
wide batch (16 streams) drafts only if this machine's forward is still cheap per extra token at that width.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

DEFAULT_NGRAM_MAX = 8  # longest trailing n-gram looked up first (a long match rarely points at the wrong place)
DEFAULT_NGRAM_MIN = 3  # shortest: in free text one or two tokens match often, and mostly the wrong place
DEFAULT_MAX_DRAFT = 31  # a step of 32 tokens: two of llama.cpp's 16-row blocks (StepCost)
DEFAULT_STEP_TOKENS = 64  # tokens a step may feed at most once drafts are added (StepCost learns up to here)
DEFAULT_MIN_GAIN = 1.05  # drafts must promise 5% more tokens per second than plain decoding (the plan is an estimate)
DEFAULT_MODEL_DRAFT = 8  # a draft model's tokens per sequence and step at most (each costs a draft forward)


@dataclass(slots=True, frozen=True)
class SpeculationConfig:
    """Speculative decoding from the text itself: at most ``max_draft`` drafted tokens per sequence and step, a step
    of at most ``step_tokens`` tokens, and drafts only when they promise ``min_gain`` times plain decoding's speed."""

    max_draft: int = DEFAULT_MAX_DRAFT
    step_tokens: int = DEFAULT_STEP_TOKENS
    ngram_max: int = DEFAULT_NGRAM_MAX
    ngram_min: int = DEFAULT_NGRAM_MIN
    min_gain: float = DEFAULT_MIN_GAIN
    model_max_draft: int = DEFAULT_MODEL_DRAFT  # with a draft model (draft_model.py): its tokens per step at most

    def __post_init__(self) -> None:
        if (self.max_draft < 1 or self.step_tokens < 1 or self.model_max_draft < 1 or not 1 <= self.ngram_min <= self.ngram_max
                or not self.min_gain >= 1.0):
            raise ValueError(f"bad speculation settings: {self}")



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
    if max_tokens == 0 or total < 2:
        return []
    # Every earlier match of the last n tokens ends on an earlier copy of the last token: find those once (one
    # pass over the history, on every decode step of every sequence), then check the longer n-grams only there.
    ends = np.flatnonzero(tokens[:total - 1] == tokens[-1])
    for n in range(min(ngram_max, total - 1), ngram_min - 1, -1):
        candidates = ends[ends >= n - 1]
        if not len(candidates):
            continue
        windows = tokens[candidates[:, None] + np.arange(1 - n, 1)]  # the n tokens ending at each candidate
        hits = candidates[(windows == tokens[total - n:]).all(axis=1)]
        if len(hits):
            follow = int(hits[-1]) + 1  # the draft is what came after the latest match, up to the history's end
            return tokens[follow:follow + max_tokens].tolist()
    return []


@dataclass(slots=True)
class DraftRate:
    """How likely a sequence's drafted tokens are to be accepted: two exponential averages over its checked drafts.

    - ``first``: that a draft's first token is accepted (whether the lookup found the right place at all);
    - ``next``: that a later token is, given the ones before it were (whether that place goes on as the text does).

    Errors come in clusters, so one number would mislead: an edit's draft is wrong right after each renamed word
    (a low ``first`` there) yet long and right in between (``next`` near 1), while free text's lookups mostly point
    at the wrong place. The j-th drafted token yields ``first * next ** (j - 1)`` tokens on average
    (:meth:`gain`). While a sequence does not draft, both drift back toward their priors (a little each step): a bad
    patch in free text does not rule drafting out for the rest of a long answer, and the probe that follows is short
    (a rate just good enough to draft buys one drafted token, not thirty).
    """

    first: float = 0.5  # a new sequence gets a few short drafts to show what its text is like
    next: float = 0.6
    prior_first: float = 0.5
    prior_next: float = 0.6
    weight: float = 0.15  # of each new trial in an average
    drift: float = 0.01  # toward the prior per step without drafts: a probe every few dozen steps at most

    def gain(self, j: int) -> float:
        """Expected tokens from the j-th drafted token (j >= 1)."""
        return self.first * self.next ** (j - 1)

    def update(self, drafted: int, accepted: int) -> None:
        """Record one verification: ``accepted`` of ``drafted`` tokens agreed with the model."""
        if not 0 <= accepted <= drafted:
            raise ValueError(f"accepted must be in [0, drafted], got {accepted} of {drafted}")
        if drafted == 0:
            self.rest()
            return
        self.first = _average(self.first, 1.0 if accepted else 0.0, self.weight)
        if accepted:
            keep = 1.0 - self.weight
            # accepted - 1 later tokens right in a row, then one wrong if the draft was cut short (that one weighs
            # half: a run that ends where the text changes says little about the next run)
            self.next = 1.0 - keep ** (accepted - 1) * (1.0 - self.next)
            if accepted < drafted:
                self.next *= 1.0 - self.weight / 2

    def successor(self) -> DraftRate:
        """The rate a new sequence starts from when this one tracks every draft the engine checks: what this
        engine's text has been like lately (a user who edits code starts with long drafts), drifting back to the
        same priors."""
        return replace(self)

    def rest(self) -> None:
        """A step without drafts."""
        self.first = _average(self.first, self.prior_first, self.drift)
        self.next = _average(self.next, self.prior_next, self.drift)


def _average(old: float, new: float, weight: float) -> float:
    return old + weight * (new - old)


class StepCost:
    """Seconds a forward of n tokens takes (1 <= n <= ``max_tokens``), learned from the engine's own steps.

    Each size keeps an exponential average of its measured times. A size never measured is estimated
    optimistically from its measured neighbours, so that the planner tries it once and the measurement decides
    from then on: 5% more per token above the nearest smaller measured size, and no more than the straight line
    to the next larger one (the planner reaches past what it knows only as far as its drafts look good). That matters because the cost rises in steps, not smoothly: llama.cpp's CPU kernels work on blocks
    of 8 and 16 rows, and on the 2-core Sapphire Rapids (Qwen-1.5B Q4_K_M, all-rows logits) 16 tokens take 283 ms,
    17 take 363, 32 take 412 and 33 take 485, so the best drafts fill a block. Below the smallest measured size the
    cost is taken in proportion to n (pessimistic about drafting, so that plain steps get measured). Before any
    measurement cost is proportional to n, under which drafting never pays: the first steps are plain, and measured.
    """

    GROWTH_ABOVE = 0.05  # per token above the largest measured size: the frontier moves up a few tokens at a time
    WEIGHT = 0.2  # of a new measurement in a size's average

    def __init__(self, max_tokens: int = DEFAULT_STEP_TOKENS) -> None:
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        self.max_tokens = max_tokens
        self._seconds = np.full(max_tokens + 1, np.nan)

    def record(self, n_tokens: int, seconds: float) -> None:
        """One forward of ``n_tokens`` tokens took ``seconds`` (sizes past ``max_tokens`` are not kept)."""
        if 1 <= n_tokens <= self.max_tokens and seconds > 0 and np.isfinite(seconds):
            old = self._seconds[n_tokens]
            self._seconds[n_tokens] = seconds if np.isnan(old) else old + self.WEIGHT * (seconds - old)

    def estimate(self, n_tokens: int) -> float:
        """Estimated seconds for a forward of ``n_tokens`` (1 <= n <= max_tokens); 1.0 before any measurement."""
        if not 1 <= n_tokens <= self.max_tokens:
            raise ValueError(f"n_tokens must be in [1, {self.max_tokens}], got {n_tokens}")
        known = np.flatnonzero(~np.isnan(self._seconds))
        if len(known) == 0:
            return float(n_tokens)
        if self._seconds[n_tokens] == self._seconds[n_tokens]:  # measured (not NaN)
            return float(self._seconds[n_tokens])
        below, above = known[known < n_tokens], known[known > n_tokens]
        if len(below) and len(above):
            lo, hi = int(below[-1]), int(above[0])
            between = self._seconds[lo] + (self._seconds[hi] - self._seconds[lo]) * (n_tokens - lo) / (hi - lo)
            # costs rise in steps: until tried, no dearer than the smaller neighbour plus the growth above it
            return float(min(between, self._seconds[lo] * (1.0 + self.GROWTH_ABOVE * (n_tokens - lo))))
        if len(below):
            lo = int(below[-1])
            return float(self._seconds[lo] * (1.0 + self.GROWTH_ABOVE * (n_tokens - lo)))
        hi = int(above[0])
        return float(self._seconds[hi] * n_tokens / hi)


def plan_drafts(rates: Sequence[DraftRate], available: Sequence[int], *, fed: int, sampled: float, cost: StepCost,
                max_tokens: int, min_gain: float = DEFAULT_MIN_GAIN,
                drafting_cost: Callable[[list[int]], float] | None = None) -> list[int]:
    """How many of its ``available`` drafted tokens each decoding sequence should have checked this step.

    ``rates[i]``: sequence i's :class:`DraftRate`; its j-th drafted token yields ``rates[i].gain(j)`` tokens on
    average. The step already feeds ``fed`` tokens and yields ``sampled`` tokens (expected) without these drafts.
    For each total number of drafted tokens the best split takes the highest expected yields first (each
    sequence's in order, as a draft's later tokens count only after its earlier ones); the total chosen maximises
    expected tokens per estimated second, provided that beats the plain step by ``min_gain``; otherwise nothing is
    drafted. ``drafting_cost(counts)``: seconds it takes to make the drafts (a draft model's forwards), added to
    the step's; None for drafts that cost nothing to find (prompt lookup).
    """
    if len(rates) != len(available) or fed < 1 or sampled < 0 or any(a < 0 for a in available):
        raise ValueError("need one rate per sequence, fed >= 1, sampled >= 0 and available counts >= 0")
    room = max(0, min(max_tokens, cost.max_tokens) - fed)
    gains = sorted(((r.gain(j), j, i) for i, (r, n) in enumerate(zip(rates, available, strict=True))
                    for j in range(1, n + 1)), key=lambda g: (-g[0], g[1]))[:room]
    counts = [0] * len(rates)
    best, best_speed, expected = list(counts), min_gain * sampled / cost.estimate(fed), float(sampled)
    for total, (gain, _, i) in enumerate(gains, start=1):
        expected += gain
        counts[i] += 1
        seconds = cost.estimate(fed + total) + (drafting_cost(counts) if drafting_cost else 0.0)
        if expected / seconds > best_speed:
            best, best_speed = list(counts), expected / seconds
    return best
