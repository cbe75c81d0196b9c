"""Sampling a whole step at once: pure functions over rows of logits and per-row parameter tensors.

Shapes: R rows (one per sampled position; a drafted sequence has 1 + len(draft)), V vocabulary, S history entries
per row, K candidates per row, C = CHUNK.

Why it is cheap on a CPU with a 151,936-token vocabulary, where torch's argmax and topk over [16, V] take ~7 ms
each on one thread but a max does 0.5 ms (it vectorises; they do not):

1. penalties and logit_bias touch only the ids in each row's history: gathered, rewritten, scattered back;
2. one pass takes the max of every chunk of C logits; greedy rows find their argmax through it, top-k rows their
   k best (they can only lie in the k chunks with the best maxima), so there is no full-row argmax, topk or sort;
3. temperature, top-p and min-p work on the K candidates only;
4. each row brings one uniform number (its own seeded generator's, drawn by the caller) and inverts its CDF, so
   a row's token depends on its logits, parameters and number alone, never on its batch mates.

Rows with no top_k need the whole vocabulary: plain temperature sampling takes a softmax over those rows only;
top_p alone first tries the TOP_P_CANDIDATES best and sorts the row only when the nucleus is wider.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

CHUNK = 128
TOP_P_CANDIDATES = 256  # top-p without top-k: the nucleus is usually among the best few hundred tokens
OK, NAN, REDO = 0, 1, 2  # row status: sampled; NaN logits (the request fails); every score -inf after penalties


@dataclass(slots=True)
class RowParams:
    """Each row's parameters. Tensors are [R]; the lists are the same values on the host, which decide the plan."""

    temperature: torch.Tensor  # float32, 1.0 on greedy rows (never divided by 0)
    top_k: torch.Tensor  # long, 0: off (also when >= V)
    top_p: torch.Tensor  # float32 in (0, 1]
    min_p: torch.Tensor  # float32 in [0, 1]
    uniform: torch.Tensor  # float32 in [0, 1): the row's random number
    plan: list[str]  # per row: "greedy", "top_k", "top_p" (top-p alone) or "full" (temperature alone)
    k: list[int]  # top_k per row, 0 when off


@dataclass(slots=True)
class Overlay:
    """The entries penalties and logit_bias rewrite, [R, S], a row padded by repeating its first entry."""

    ids: torch.Tensor  # long
    bias: torch.Tensor  # float32, logit_bias (0 where none)
    counts: torch.Tensor  # float32, times generated (0 for prompt-only ids)
    seen: torch.Tensor  # bool, the repetition penalty applies (prompt or output)
    repetition: torch.Tensor  # [R, 1] float32, 1.0: off
    presence: torch.Tensor  # [R, 1]
    frequency: torch.Tensor  # [R, 1]


def finite_scores(x: torch.Tensor) -> torch.Tensor:
    """NaN -> -inf (never chosen), +inf -> the largest float (always among the best)."""
    return torch.nan_to_num(x, nan=float("-inf"), posinf=torch.finfo(x.dtype).max)


def overlay_values(raw: torch.Tensor, ov: Overlay) -> torch.Tensor:
    """[R, S]: HF repetition penalty on the biased logits of seen ids, minus the OpenAI penalties."""
    v = raw + ov.bias
    v = torch.where(ov.seen, torch.where(v > 0, v / ov.repetition, v * ov.repetition), v)
    v = v - ov.frequency * ov.counts - ov.presence * (ov.counts > 0).to(v.dtype)
    return finite_scores(v)


def chunk_maxima(x: torch.Tensor) -> torch.Tensor:
    """[R, V // C]: the max of each whole chunk (a view of the rows: no copy); the tail is left to the callers."""
    n = x.shape[-1] // CHUNK
    return x[:, :n * CHUNK].view(x.shape[0], n, CHUNK).amax(-1)


def row_max(x: torch.Tensor, maxima: torch.Tensor) -> torch.Tensor:
    """[R]: each row's max (NaN when the row holds one)."""
    best = maxima.amax(-1) if maxima.shape[-1] else torch.full(x.shape[:1], float("-inf"), device=x.device)
    tail = x[:, maxima.shape[-1] * CHUNK:]
    return torch.maximum(best, tail.amax(-1)) if tail.shape[-1] else best


def argmax_rows(x: torch.Tensor, maxima: torch.Tensor) -> torch.Tensor:
    """[R]: torch.argmax(x, -1), the first best index, found in the first chunk holding the best max."""
    rows, n = x.shape[0], maxima.shape[-1]
    if n == 0:
        return x.argmax(-1)
    chunk = maxima.argmax(-1)  # [R]
    head = x[:, :n * CHUNK].view(rows, n, CHUNK)
    best = chunk * CHUNK + head[torch.arange(rows, device=x.device), chunk].argmax(-1)
    if n * CHUNK == x.shape[-1]:
        return best
    tail = x[:, n * CHUNK:]
    tail_best = tail.argmax(-1)
    # strictly better: on a tie the head's index comes first
    wins = tail.gather(1, tail_best[:, None])[:, 0] > maxima.gather(1, chunk[:, None])[:, 0]
    return torch.where(wins, n * CHUNK + tail_best, best)


def topk_rows(x: torch.Tensor, maxima: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.topk(x, k) (best first): each of the k best lies in a chunk whose max is among the k best maxima.

    Ties may pick other ids of equal value than torch.topk would, which samples the same distribution."""
    rows, n = x.shape[0], maxima.shape[-1]
    if 2 * k >= n:  # too few chunks to save anything
        return torch.topk(x, min(k, x.shape[-1]))
    _, chunks = torch.topk(maxima, k)  # [R, k]
    head = x[:, :n * CHUNK].view(rows, n, CHUNK)
    values = head.gather(1, chunks[:, :, None].expand(rows, k, CHUNK)).reshape(rows, k * CHUNK)
    ids = (chunks[:, :, None] * CHUNK + torch.arange(CHUNK, device=x.device)).reshape(rows, k * CHUNK)
    if n * CHUNK < x.shape[-1]:
        values = torch.cat([values, x[:, n * CHUNK:]], dim=-1)
        ids = torch.cat([ids, torch.arange(n * CHUNK, x.shape[-1], device=x.device).expand(rows, -1)], dim=-1)
    best, where = torch.topk(values, k)
    return best, ids.gather(1, where)


def nucleus_rows(sorted_probs: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """Zero each row's tail beyond the smallest prefix holding top_p of the mass; top_p [R], 1.0 keeps all."""
    before = torch.cumsum(sorted_probs, dim=-1) - sorted_probs
    keep = (before < top_p[:, None]) | (top_p[:, None] >= 1.0)  # the first token is always kept
    return torch.where(keep, sorted_probs, torch.zeros_like(sorted_probs))


def min_p_rows(probs: torch.Tensor, best: torch.Tensor, min_p: torch.Tensor) -> torch.Tensor:
    """Zero tokens less likely than min_p [R] times the row's best probability best [R]."""
    return torch.where(probs >= (min_p * best)[:, None], probs, torch.zeros_like(probs))


def candidate_probs(values: torch.Tensor, p: RowParams, log_norm: torch.Tensor | None = None) -> torch.Tensor:
    """[R, K] weights of sorted candidates after temperature, top-k, top-p and min-p (not normalised).

    log_norm [R]: log of the whole row's mass at this temperature (top-p alone is relative to the vocabulary);
    None: the row's top_k candidates are its whole distribution (top-p relative to them, as HF does)."""
    scaled = (finite_scores(values) - finite_scores(values[:, :1])) / p.temperature[:, None]
    if log_norm is None:
        positions = torch.arange(values.shape[-1], device=values.device)[None, :]
        scaled = scaled.masked_fill(positions >= p.top_k[:, None], float("-inf"))
        probs = torch.softmax(scaled, dim=-1)
    else:
        probs = torch.exp(scaled - log_norm[:, None])
    probs = nucleus_rows(probs, p.top_p)
    return min_p_rows(probs, probs[:, 0], p.min_p)


def log_mass(x: torch.Tensor, best: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    """[R]: logsumexp of (x - best) / temperature over the whole row, the normaliser of top-p alone."""
    return torch.logsumexp((finite_scores(x) - finite_scores(best)[:, None]) / temperature[:, None], dim=-1)


def full_probs(x: torch.Tensor, p: RowParams) -> torch.Tensor:
    """[R, V] the whole distribution at each row's temperature, min-p applied (rows with no top-k, top-p 1)."""
    scores = finite_scores(x)
    probs = torch.softmax((scores - scores.amax(-1, keepdim=True)) / p.temperature[:, None], dim=-1)
    return min_p_rows(probs, probs.amax(-1), p.min_p)


def draw(weights: torch.Tensor, uniform: torch.Tensor) -> torch.Tensor:
    """[R]: index i with probability weights[i] / sum: the first whose cumulative weight exceeds uniform * sum.

    A zero weight never wins (its cumulative weight equals the one before); float rounding at the very end falls
    back to the row's best weight rather than to a zero one."""
    cdf = torch.cumsum(weights, dim=-1)
    target = uniform * cdf[:, -1]
    index = torch.searchsorted(cdf, target[:, None], right=True)[:, 0].clamp(max=weights.shape[-1] - 1)
    chosen = weights.gather(1, index[:, None])[:, 0]
    return torch.where(chosen > 0, index, weights.argmax(-1))


def select(p: RowParams, index: torch.Tensor) -> RowParams:
    """The parameters of the rows in index [n] (long), in that order."""
    rows = index.tolist()
    return RowParams(p.temperature[index], p.top_k[index], p.top_p[index], p.min_p[index], p.uniform[index],
                     [p.plan[r] for r in rows], [p.k[r] for r in rows])


def sample_tokens(logits: torch.Tensor, p: RowParams, overlay: Overlay | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [R] long, status [R] long: OK, NAN or REDO) for rows of float32 logits [R, V].

    The overlay's values are written into logits for the search and the raw ones put back before returning: the
    caller's logits come back as they were (its logprobs read the raw distribution) and no [R, V] copy is made."""
    raw = None
    if overlay is not None:
        raw = logits.gather(1, overlay.ids)
        logits.scatter_(1, overlay.ids, overlay_values(raw, overlay))
    try:
        maxima = chunk_maxima(logits)
        best = row_max(logits, maxima)  # NaN when the row holds one: amax propagates it
        nan = torch.isnan(best) if raw is None else torch.isnan(best) | torch.isnan(raw).any(-1)
        status = torch.where(nan, NAN, torch.where(torch.isneginf(best), REDO, OK))
        tokens = _pick(logits, maxima, best, p)
    finally:
        if overlay is not None and raw is not None:
            logits.scatter_(1, overlay.ids, raw)
    return tokens, status


def _pick(x: torch.Tensor, maxima: torch.Tensor, best: torch.Tensor, p: RowParams) -> torch.Tensor:
    """Every row's token: the argmax, overwritten on sampled rows by their plan's draw."""
    tokens = argmax_rows(x, maxima)
    rows = {kind: [r for r, planned in enumerate(p.plan) if planned == kind] for kind in ("top_k", "top_p", "full")}
    k = max([p.k[r] for r in rows["top_k"]] + [TOP_P_CANDIDATES] * bool(rows["top_p"]), default=0)
    values, ids = topk_rows(x, maxima, min(k, x.shape[-1])) if k else (x[:, :0], tokens[:, None])
    for kind, chosen in rows.items():
        if not chosen:
            continue
        index = torch.tensor(chosen, dtype=torch.long, device=x.device)
        sub = select(p, index)
        if kind == "top_k":
            picked = ids[index].gather(1, draw(candidate_probs(values[index], sub), sub.uniform)[:, None])[:, 0]
        elif kind == "top_p":
            picked = _top_p_alone(x[index], values[index], ids[index], best[index], sub)
        else:
            picked = draw(full_probs(x[index], sub), sub.uniform)
        tokens[index] = picked
    return tokens


def _top_p_alone(x: torch.Tensor, values: torch.Tensor, ids: torch.Tensor, best: torch.Tensor,
                 p: RowParams) -> torch.Tensor:
    """Top-p over the whole vocabulary: the candidates when they hold top_p of the mass, else the sorted row."""
    norm = log_mass(x, best, p.temperature)
    mass = torch.exp((finite_scores(values) - finite_scores(best)[:, None]) / p.temperature[:, None]
                     - norm[:, None]).sum(-1)
    # A second host sync, only on steps with such rows; when a flat row's nucleus outgrows the candidates, these
    # rows sort their whole vocabulary (the same nucleus for the others, which fit).
    if bool((mass < p.top_p).any()):
        values, ids = torch.sort(x, dim=-1, descending=True)
    picked = draw(candidate_probs(values, p, norm), p.uniform)
    return ids.gather(1, picked[:, None])[:, 0]
