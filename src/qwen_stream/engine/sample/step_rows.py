"""A step's rows to sample, from each sequence's SamplingState to the batch sampler's tensors and back.

Each row brings its state, the tokens counted as generated before it (a drafted position's earlier drafts: the
penalties it sees if those drafts are kept) and the seed of its position's random stream. Only the random number
is drawn per row (from the row's own generator), so a seeded request gets the same tokens whatever its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.nn.utils.rnn import pad_sequence

from qwen_stream.engine.sample.batched import NAN, REDO, Overlay, RowParams, sample_tokens
from qwen_stream.engine.sample.per_sequence import NonFiniteLogitsError, SamplingState, sample_row


@dataclass(slots=True)
class SampleRow:
    state: SamplingState
    drafted: Sequence[int] = ()  # tokens counted as generated on top of the history (earlier drafts)
    seed: int | None = None  # reseed the generator for this position first; None: continue its stream


def sample_rows(logits: torch.Tensor, rows: Sequence[SampleRow]) -> list[int | Exception]:
    """One token per row of float32 logits [R, V], rows paired in order, with one host sync for the batch.

    A row that cannot be sampled (NaN logits) gives its exception instead, so only its request fails."""
    if not rows:
        return []
    vocab = logits.shape[-1]
    params = row_params(rows, vocab, logits.device)
    with torch.inference_mode():  # runners' logits are inference tensors, which only change in place in this mode
        tokens, status = sample_tokens(logits, params, build_overlay(rows, vocab, logits.device))
    out: list[int | Exception] = []
    for r, (token, code) in enumerate(zip(*torch.stack([tokens, status]).tolist(), strict=True)):
        if code == NAN:
            out.append(NonFiniteLogitsError("the model produced NaN logits"))
        elif code == REDO:  # penalties overflowed every score: the reference chooses as if there were none
            out.append(_reference(logits[r], rows[r]))
        else:
            out.append(int(token))
    return out


def sample_batch(logits: torch.Tensor, states: Sequence[SamplingState]) -> list[int | Exception]:
    """One token per row of logits [B, V] for states in order, each continuing its generator's stream."""
    return sample_rows(logits, [SampleRow(state) for state in states])


def _reference(logits: torch.Tensor, row: SampleRow) -> int | Exception:
    try:
        return sample_row(logits, row.state)
    except Exception as exc:  # this row's failure is its request's alone
        return exc


def row_params(rows: Sequence[SampleRow], vocab: int, device: torch.device) -> RowParams:
    """Per-row parameter tensors and the host-side plan; each sampled row draws its one random number here."""
    plans, ks, temps, top_ps, min_ps, uniforms = [], [], [], [], [], []
    for row in rows:
        p = row.state.params
        k = p.top_k if 0 < p.top_k < vocab else 0
        plan = "greedy" if p.greedy else "top_k" if k else "top_p" if p.top_p < 1.0 else "full"
        plans.append(plan)
        ks.append(k)
        temps.append(1.0 if p.greedy else p.temperature)
        top_ps.append(p.top_p)
        min_ps.append(p.min_p)
        uniforms.append(0.0 if p.greedy else _uniform(row))

    def f32(values: list[float]) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float32, device=device)

    return RowParams(temperature=f32(temps), top_k=torch.tensor(ks, device=device), top_p=f32(top_ps),
                     min_p=f32(min_ps), uniform=f32(uniforms), plan=plans, k=ks)


def _uniform(row: SampleRow) -> float:
    generator = row.state.generator
    if row.seed is not None:
        generator.manual_seed(row.seed)
    return float(torch.rand((), generator=generator))


def build_overlay(rows: Sequence[SampleRow], vocab: int, device: torch.device) -> Overlay | None:
    """The entries penalties and logit_bias rewrite in each row, or None when no row has any."""
    entries = [_row_entries(row, vocab) for row in rows]  # (ids, counts, bias or None, history length)
    lengths = torch.tensor([len(ids) for ids, *_ in entries])
    if int(lengths.max()) == 0:
        return None
    positions = torch.arange(int(lengths.max()))[None, :]
    real = positions < lengths[:, None]  # [R, S]; elsewhere a row repeats its first entry

    def padded(values: list[torch.Tensor]) -> torch.Tensor:
        out = pad_sequence(values, batch_first=True)
        return torch.where(real, out, out[:, :1])

    ids = padded([e[0] for e in entries])
    counts = padded([e[1] for e in entries])
    bias = padded([e[2] if e[2] is not None else torch.zeros(len(e[0])) for e in entries])
    history = torch.tensor([e[3] for e in entries])[:, None]
    seen = torch.where(real, positions < history, history > 0)
    factors = [_factors(row) if len(e[0]) else (1.0, 0.0, 0.0) for row, e in zip(rows, entries, strict=True)]
    rep, presence, frequency = (torch.tensor([[f[i]] for f in factors], dtype=torch.float32) for i in range(3))
    return Overlay(ids=ids.to(device), bias=bias.to(device), counts=counts.to(device), seen=seen.to(device),
                   repetition=rep.to(device), presence=presence.to(device), frequency=frequency.to(device))


def _factors(row: SampleRow) -> tuple[float, float, float]:
    p = row.state.params
    if row.state.history is None:
        return 1.0, 0.0, 0.0  # logit_bias alone
    return p.repetition_penalty, p.presence_penalty, p.frequency_penalty


def _row_entries(row: SampleRow, vocab: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, int]:
    """(ids, counts, bias, n) of one row: its history's n ids, then the logit_bias ids not already among them."""
    history = row.state.history
    if history is not None:
        ids, counts = history.tensors(row.drafted)
    else:
        ids, counts = torch.zeros(0, dtype=torch.long), torch.zeros(0)
    n = len(ids)
    pairs = [(t, b) for t, b in row.state.params.logit_bias if t < vocab]
    if not pairs:
        return ids, counts, None, n
    slot = {t: i for i, t in enumerate(ids.tolist())}
    new = [(t, b) for t, b in pairs if t not in slot]
    bias = torch.zeros(n + len(new))
    for t, b in pairs:
        if t in slot:
            bias[slot[t]] = b
    bias[n:] = torch.tensor([b for _, b in new])
    ids = torch.cat([ids, torch.tensor([t for t, _ in new], dtype=torch.long)])
    return ids, torch.cat([counts, torch.zeros(len(new))]), bias, n
