"""Checking drafted tokens against the model: pure functions over rows of logits or probabilities.

After a forward over ``[last token, d1, ..., dk]`` the model has a distribution for each of the k + 1 next
positions. Position i's distribution is only valid if d1..di were right, so drafts are checked in order and the
first disagreement ends the step; the model's own token there is kept, so a step always yields at least one token.

- Greedy: the model's choice at each position is its argmax; keep the longest agreeing prefix plus the model's
  next token (:func:`accept_greedy`). The output is the one plain decoding gives, token for token.
- Sampled: standard speculative sampling (Leviathan et al. 2023; Chen et al. 2023), :func:`speculative_sample`:
  accept draft d with probability min(1, p(d) / q(d)), on rejection sample from the residual max(0, p - q)
  renormalised; every emitted token is distributed exactly as the model's p. For drafts from the text (prompt
  lookup) q is a point mass on d: d is accepted with probability p(d) and the residual is p without d. That is the
  same as sampling from p and comparing with d, which is what the engine does with one random stream per position
  (:func:`position_seed`): the text then depends on the seed alone, whether or how much was drafted.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

_MIX = 0x9E3779B97F4A7C15  # 2^64 / golden ratio: spreads consecutive positions over the seed space
_MASK = (1 << 63) - 1


def accept_greedy(draft: Sequence[int], target: Sequence[int]) -> list[int]:
    """The tokens a greedy step yields: ``target[i]`` is the model's choice after the i-th fed token.

    ``len(target)`` must be ``len(draft) + 1``. Returns the agreeing prefix of the draft plus the model's token at
    the first disagreement (or its bonus token after a fully accepted draft): 1..k+1 tokens.
    """
    if len(target) != len(draft) + 1:
        raise ValueError(f"need one model choice per fed token: {len(draft)} drafts, {len(target)} choices")
    agreed = 0
    while agreed < len(draft) and draft[agreed] == target[agreed]:
        agreed += 1
    return list(target[:agreed + 1])


def speculative_sample(target_probs: torch.Tensor, draft: Sequence[int], generator: torch.Generator,
                       draft_probs: torch.Tensor | None = None) -> list[int]:
    """Standard speculative sampling: 1..k+1 tokens distributed exactly as the target model's.

    target_probs: [k + 1, V], the model's distribution at each position (row i after feeding the i-th draft).
    draft: the k drafted tokens. draft_probs: [k, V], the distribution each draft was sampled from, or None for
    deterministic drafts (a point mass on each drafted token). ``generator`` draws every random number, so a
    seed gives the same tokens run to run.
    """
    k = len(draft)
    if target_probs.dim() != 2 or target_probs.shape[0] != k + 1:
        raise ValueError(f"target_probs must be [{k + 1}, vocab], got {tuple(target_probs.shape)}")
    if draft_probs is not None and tuple(draft_probs.shape) != (k, target_probs.shape[1]):
        raise ValueError(f"draft_probs must be [{k}, {target_probs.shape[1]}], got {tuple(draft_probs.shape)}")
    out: list[int] = []
    for i, token in enumerate(draft):
        p = target_probs[i]
        q_token = 1.0 if draft_probs is None else float(draft_probs[i, token])
        u = float(torch.rand((), generator=generator))
        if q_token > 0 and u * q_token < float(p[token]):  # u < p/q, without dividing by a tiny q
            out.append(int(token))
            continue
        residual = _residual(p, token, None if draft_probs is None else draft_probs[i])
        out.append(int(torch.multinomial(residual, 1, generator=generator)))
        return out
    out.append(int(torch.multinomial(target_probs[k], 1, generator=generator)))  # all accepted: a bonus token
    return out


def _residual(p: torch.Tensor, token: int, q: torch.Tensor | None) -> torch.Tensor:
    """max(0, p - q), renormalised by multinomial; q None is a point mass on ``token``."""
    if q is None:
        residual = p.clone()
        residual[token] = 0.0
    else:
        residual = torch.clamp(p - q, min=0.0)
    if float(residual.sum()) <= 0.0:  # p == q exactly: rejection had probability 0, but floats may get here
        return p
    return residual


def position_seed(seed: int, position: int) -> int:
    """The seed of the random stream that picks the token at ``position`` of a sequence seeded with ``seed``.

    Per-position streams make the sampled text a function of the seed alone: a step that checks 5 drafted
    positions and keeps 2 draws the same numbers for those 2 as plain decoding would, and nothing it drew for the
    3 rejected ones shifts what comes later."""
    return ((seed & _MASK) ^ ((position + 1) * _MIX)) & _MASK
