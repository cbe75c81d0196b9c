"""Per-sequence sampling state, and token choice over one row of logits: the reference the batch sampler
(batched.py, which the engine uses) is tested against, and its fallback for a row whose penalties overflowed
every score.

Each sequence owns its torch.Generator, so the text a request gets depends on its seed alone, never on what
else shares the batch.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from qwen_stream.engine.sample.batched import TOP_P_CANDIDATES, finite_scores
from qwen_stream.engine.sample.penalty_counts import TokenHistory
from qwen_stream.types import SamplingParams, TokenLogprob, TokenMatcher


@dataclass(slots=True)
class SamplingState:
    """What one sequence needs to sample: its parameters, its RNG and the token counts its penalties use."""

    params: SamplingParams
    generator: torch.Generator
    history: TokenHistory | None = None  # prompt + output ids and their output counts, when penalties are used
    matcher: TokenMatcher | None = None  # this sequence's place in its grammar (params.constraint)

    @classmethod
    def create(cls, params: SamplingParams, prompt_ids: Sequence[int], vocab_size: int) -> SamplingState:
        generator = torch.Generator()
        seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        generator.manual_seed(seed)
        state = cls(params=params, generator=generator)
        if params.constraint is not None:
            state.matcher = params.constraint.new_matcher()
        if params.uses_penalties:
            state.history = TokenHistory(prompt_ids, vocab_size)
        return state

    def record(self, token_id: int) -> None:
        """O(1) per token: penalties read these tensors instead of rescanning the history."""
        if self.history is not None:
            self.history.record(token_id)

    @property
    def plain_greedy(self) -> bool:
        """Greedy with nothing to add to the logits first: the model's argmax is the token."""
        return self.params.greedy and self.history is None and not self.params.logit_bias


def apply_penalties(logits: torch.Tensor, state: SamplingState) -> torch.Tensor:
    """HF repetition penalty over prompt + output, OpenAI presence/frequency penalties over the output."""
    params = state.params
    if state.history is None:
        return logits
    seen, counts = state.history.dense(logits.shape[-1])
    if params.repetition_penalty != 1.0:
        penalised = torch.where(logits > 0, logits / params.repetition_penalty, logits * params.repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    if params.frequency_penalty != 0.0:
        logits = logits - params.frequency_penalty * counts
    if params.presence_penalty != 0.0:
        logits = logits - params.presence_penalty * (counts > 0).to(logits.dtype)
    return logits


def apply_logit_bias(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """OpenAI's logit_bias: added to the raw logits; ids outside this model's vocabulary are ignored."""
    if not params.logit_bias:
        return logits
    vocab = logits.shape[-1]
    pairs = [(token_id, bias) for token_id, bias in params.logit_bias if token_id < vocab]
    if not pairs:
        return logits
    ids = torch.tensor([token_id for token_id, _ in pairs], dtype=torch.long)
    biases = torch.tensor([bias for _, bias in pairs], dtype=logits.dtype)
    return logits.index_add(-1, ids, biases)


def min_p_filter(probs: torch.Tensor, min_p: float) -> torch.Tensor:
    """Zero the tokens less likely than ``min_p`` times the most likely one (any scale: only ratios matter)."""
    if min_p <= 0.0:
        return probs
    return torch.where(probs >= min_p * probs.max(), probs, torch.zeros_like(probs))


def candidate_distribution(logits: torch.Tensor, params: SamplingParams) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Scale by temperature and cut by top-k / top-p.

    Returns (probs, ids): probabilities over the kept candidates, most likely first, and their token ids;
    ids is None when every token stays a candidate (probs then covers the whole vocabulary).
    """
    # Shifted so the best score is 0 before scaling: a small temperature cannot overflow every score to -inf.
    logits = finite_scores((logits - logits.max()) / params.temperature)
    vocab = logits.shape[-1]
    if params.top_k > 0 and params.top_k < vocab:
        values, ids = torch.topk(logits, params.top_k)  # sorted, most likely first
        probs = torch.softmax(values, dim=-1)
    elif params.top_p < 1.0:
        log_norm = torch.logsumexp(logits, dim=-1)
        values, ids = torch.topk(logits, min(TOP_P_CANDIDATES, vocab))
        probs = torch.exp(values - log_norm)
        if float(probs.sum()) < params.top_p:  # the nucleus is wider than the candidates: sort everything
            values, ids = torch.sort(logits, descending=True)
            probs = torch.exp(values - log_norm)
    else:
        return min_p_filter(torch.softmax(logits, dim=-1), params.min_p), None
    if params.top_p < 1.0:
        probs = nucleus(probs, params.top_p)
    return min_p_filter(probs, params.min_p), ids


def nucleus(sorted_probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Zero the tail of descending probabilities beyond the smallest prefix holding top_p of the mass."""
    cumulative = torch.cumsum(sorted_probs, dim=-1)
    keep = (cumulative - sorted_probs) < top_p  # the first token is always kept
    return torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))


class NonFiniteLogitsError(ValueError):
    """The model gave NaN logits for a sequence: no token can be chosen, the request must fail."""


def check_logits(logits: torch.Tensor) -> None:
    """Refuse a row of logits [vocab] holding NaN (a broken model or runner); infinities are handled later."""
    if not torch.isfinite(logits.sum()) and bool(torch.isnan(logits).any()):  # the sum is the cheap test
        raise NonFiniteLogitsError("the model produced NaN logits")


def sample_row(logits: torch.Tensor, state: SamplingState) -> int:
    """Pick one token from one row of float32 logits [vocab]; raises NonFiniteLogitsError on NaN logits."""
    check_logits(logits)
    params = state.params
    scores = finite_scores(apply_penalties(apply_logit_bias(logits, params), state))
    if bool(torch.isneginf(scores).all()):  # penalties overflowed every score: choose as if there were none
        scores = logits
    if params.greedy:
        return int(torch.argmax(scores))
    probs, ids = candidate_distribution(scores, params)
    choice = int(torch.multinomial(probs, 1, generator=state.generator))
    return int(ids[choice]) if ids is not None else choice


def token_logprobs(logits: torch.Tensor, token_id: int, top_n: int) -> TokenLogprob:
    """Log-probabilities of the model's raw distribution (before penalties and temperature), as OpenAI reports.

    A constrained row comes here after its grammar mask: the distribution is then over the allowed tokens, and
    forbidden ones (-inf, which JSON cannot carry) are left out of ``top``."""
    log_probs = torch.log_softmax(logits, dim=-1)
    top: list[tuple[int, float]] = []
    if top_n > 0:
        values, ids = torch.topk(log_probs, top_n)
        top = [(i, v) for i, v in zip(ids.tolist(), values.tolist(), strict=True) if v > float("-inf")]
    return TokenLogprob(token_id=token_id, logprob=float(log_probs[token_id]), top=top)
