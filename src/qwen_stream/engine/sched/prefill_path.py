"""Which prompt chunks take the runner's fast prefill (int8 GEMMs: engine/runners/int8_prefill.py), by measured cost.

Pure bookkeeping, no model: the engine's step records how long each step with prompt chunks took per prompt token,
apart for steps whose prompt chunks all went one way or the other, and the next chunk goes the cheaper way. Until a
way is measured it is tried (the first eligible chunks measure both), and the dearer way is tried again every
``RETRY_EVERY`` steps, so a change (a longer context, a busier machine) is noticed. Where int8 GEMMs do not beat
llama.cpp's kernels (a CPU without fast int8) the measurements keep llama.cpp's own prefill.

Never fast: chunks shorter than ``min_tokens`` (a follow-up turn's few tokens: llama.cpp is cheap there, and the
fast path reads the slot's whole cached prefix back), pooled prompts (they need llama.cpp's hidden states), and
requests with a seed of their own: their text must not depend on which way a chunk went (the scheduler's
``exact``), so they always take the runner's reference kernels, and KV a fast chunk computed never counts as exact.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from qwen_stream.engine.runners.base import SeqChunk

DEFAULT_MIN_TOKENS = 64


class PrefillPaths:
    """Per-token cost of prompt chunks on each way (an exponential average), and the choice it gives."""

    WEIGHT = 0.3  # of a new measurement in a way's average
    RETRY_EVERY = 16  # every this many choices the dearer way runs once more, to stay measured

    def __init__(self, ready: Callable[[], bool], *, always: bool = False,
                 min_tokens: int = DEFAULT_MIN_TOKENS) -> None:
        self.ready = ready  # whether the runner's fast prefill can run now (it may be built in the background)
        self.always = always  # every eligible chunk fast (prefill="int8"), whatever the measurements say
        self.min_tokens = min_tokens
        self.cost: dict[bool, float] = {True: math.nan, False: math.nan}  # seconds per prompt token, by way
        self.fast_tokens = 0  # prompt tokens the fast prefill computed, in total
        self._choices = 0  # steps decided by the measurements (every RETRY_EVERY-th takes the dearer way)
        self._step_way: bool | None = None  # the way this step's eligible chunks go, once its first one asked

    def new_step(self) -> None:
        """A step is being scheduled: its eligible chunks all go the way its first one goes, so the step measures
        that way (a step of both ways measures neither)."""
        self._step_way = None

    def choose(self, n_tokens: int) -> bool:
        """Whether a prompt chunk of ``n_tokens`` (of a request without a seed of its own) goes fast."""
        if n_tokens < self.min_tokens or not self.ready():
            return False
        if self._step_way is None:
            self._step_way = self._decide()
        return self._step_way

    def _decide(self) -> bool:
        if self.always:
            return True
        fast, slow = self.cost[True], self.cost[False]
        if math.isnan(fast) or math.isnan(slow):
            return math.isnan(fast)  # measure the fast way first, then the other
        self._choices += 1
        cheaper = fast < slow
        return not cheaper if self._choices % self.RETRY_EVERY == 0 else cheaper

    def record(self, chunks: Sequence[SeqChunk], seconds: float) -> None:
        """A step of these chunks took ``seconds``: a measurement of the way its prompt chunks went, if they all
        went one way (decode tokens beside them are counted as prompt tokens: a small error, on both ways)."""
        prompt = [c for c in chunks if len(c.token_ids) >= self.min_tokens and not c.hidden]
        ways = {c.fast for c in prompt}
        if len(ways) != 1 or not seconds > 0:
            return
        fast = ways.pop()
        per_token = seconds / sum(len(c.token_ids) for c in chunks)
        old = self.cost[fast]
        self.cost[fast] = per_token if math.isnan(old) else old + self.WEIGHT * (per_token - old)
        if fast:
            self.fast_tokens += sum(len(c.token_ids) for c in prompt)


def paths_for(runner: Any) -> PrefillPaths | None:
    """The planner for a runner that has, or is building, a fast prefill (``fast_prefill_coming``; ready once it is
    attached), else None. ``prefill_always`` on the runner: every eligible chunk fast."""
    if not getattr(runner, "fast_prefill_coming", False):
        return None
    return PrefillPaths(lambda: bool(runner.fast_prefill_ready), always=bool(getattr(runner, "prefill_always", False)))
