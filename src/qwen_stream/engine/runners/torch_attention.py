"""Attention over the slot KV cache for one packed step of the native PyTorch runner.

The runner (torch_native.py) runs all of a step's token rows through each layer at once: one matmul per
projection for every chunk together. Only attention depends on which sequence a row belongs to, so
``plan_step`` sorts a step's chunks into groups of consecutive rows that each attend in their own way:

- one-token chunks (decodes): one batched SDPA of one query row per sequence, with fast paths;
- short multi-token chunks (a speculative step: the last token and its drafts): one batched SDPA with the
  queries padded to the longest chunk;
- long chunks (prompt prefill): one SDPA per chunk over its own slot.

Each group writes its rows' keys and values into the cache at (slot, position) before it attends.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import accumulate

import torch
import torch.nn.functional as F
from torch import Tensor

from qwen_stream.engine.runners.base import SeqChunk
from qwen_stream.engine.spec.drafting import DEFAULT_MAX_DRAFT

# Chunks of 2..PACKED_MAX_TOKENS tokens attend as one padded batch. A speculative step feeds the last token plus
# at most DEFAULT_MAX_DRAFT drafts, so every one of them packs, and padding to the longest wastes at most 31 query
# rows a chunk. A prompt chunk (hundreds of tokens) padded alongside would multiply the others' attention work and
# the mask ([B, G * S, L]) by its length; it attends alone, causally, at no padding cost.
PACKED_MAX_TOKENS = 1 + DEFAULT_MAX_DRAFT

# (k_cache, v_cache, q [N, H, D], k [N, KV, D], v [N, KV, D]) -> [N, H * D] for one group's rows in one layer
Attend = Callable[[Tensor, Tensor, Tensor, Tensor, Tensor], Tensor]


@dataclass(frozen=True, slots=True)
class Heads:
    """Grouped-query attention's shape: ``group`` query heads share each of the ``kv`` key/value heads."""

    kv: int
    group: int
    dim: int  # D, per head
    scale: float


def reads_window(lo: int, hi: int, n_seqs: int) -> bool:
    """Whether n_seqs sequences in slots [lo, hi) read their keys as a view of that window rather than a gathered
    copy: a view is free, and attending over a few idle slots beside them beats copying every layer's keys."""
    return hi - lo <= 2 * n_seqs


def additive(allowed: Tensor, dtype: torch.dtype) -> Tensor:
    """A bool mask as the float one SDPA adds to its scores, made once per step rather than once per layer."""
    return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill_(~allowed, -torch.inf)


# -- one-token chunks ---------------------------------------------------------------------------------------
@dataclass(slots=True)
class DecodePlan:
    """Where the rows of one batched decode step read and write the cache (built once per step)."""

    slots: Tensor  # [B] slot of each row
    pos: Tensor  # [B] position of each row's token
    single: tuple[int, int] | None  # (slot, pos) when B == 1: plain slices, no index tensors
    lo: int  # rows attend over the window cache[lo:hi] (a view) ...
    hi: int
    gather: bool  # ... or, when the slots are too scattered, over a gathered copy cache[slots]
    rows: Tensor | None  # [B] row of each sequence inside the window; None when the window is the batch itself
    length: int  # keys to read: max(pos) + 1
    mask: Tensor | None  # [rows, 1, 1, length] 0 where a row may attend, -inf elsewhere; None when all may


def plan_decode(chunks: Sequence[SeqChunk], arange: Tensor, dtype: torch.dtype) -> DecodePlan:
    slots = [c.slot for c in chunks]
    pos = [c.start_pos for c in chunks]
    length = max(pos) + 1
    lo, hi = min(slots), max(slots) + 1
    dev = arange.device
    slots_t, pos_t = torch.tensor(slots, device=dev), torch.tensor(pos, device=dev)
    if len(chunks) == 1:
        return DecodePlan(slots_t, pos_t, (slots[0], pos[0]), lo, hi, False, None, length, None)
    gather = not reads_window(lo, hi, len(chunks))
    rows = None
    if gather or slots == list(range(lo, hi)):
        row_pos = pos_t
    else:
        rows = slots_t - lo
        row_pos = torch.zeros(hi - lo, dtype=pos_t.dtype, device=dev).index_copy_(0, rows, pos_t)
    mask = None
    if min(pos) != max(pos) or rows is not None:
        mask = additive(arange[:length][None, :] <= row_pos[:, None], dtype)[:, None, None, :]
    return DecodePlan(slots_t, pos_t, None, lo, hi, gather, rows, length, mask)


def decode_attn(heads: Heads, plan: DecodePlan, kc: Tensor, vc: Tensor, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """q: [B, H, D], k/v: [B, KV, D] -> [B, H * D]."""
    n = plan.length
    if plan.single is not None:
        slot, pos = plan.single
        kc[slot, :, pos] = k[0]  # [KV, D]
        vc[slot, :, pos] = v[0]
        return attend_one(heads, q, kc[slot : slot + 1, :, :n], vc[slot : slot + 1, :, :n], None)
    kc[plan.slots, :, plan.pos] = k  # [B, KV, D]
    vc[plan.slots, :, plan.pos] = v
    if plan.gather:
        return attend_one(heads, q, kc[plan.slots, :, :n], vc[plan.slots, :, :n], plan.mask)
    keys, values = kc[plan.lo : plan.hi, :, :n], vc[plan.lo : plan.hi, :, :n]
    if plan.rows is None:
        return attend_one(heads, q, keys, values, plan.mask)
    # Idle slots inside the window get a zero query that attends to position 0 only; their rows are dropped.
    window_q = q.new_zeros((plan.hi - plan.lo, *q.shape[1:])).index_copy_(0, plan.rows, q)
    return attend_one(heads, window_q, keys, values, plan.mask).index_select(0, plan.rows)


def attend_one(heads: Heads, q: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None) -> Tensor:
    """One query token per row. q: [B, H, D]; keys/values: [B, KV, L, D] -> [B, H * D].

    The G query heads sharing a kv head are G query rows ([B, KV, G, D], a view): no repeated keys."""
    batch = q.shape[0]
    folded = q.view(batch, heads.kv, heads.group, heads.dim)
    out = F.scaled_dot_product_attention(folded, keys, values, attn_mask=mask, scale=heads.scale)
    return out.view(batch, heads.kv * heads.group * heads.dim)


# -- long chunks ----------------------------------------------------------------------------------------------
@dataclass(slots=True)
class PrefillPlan:
    """One chunk attending alone over its slot."""

    slot: int
    start: int
    mask: Tensor  # [G * S, start + S]


def plan_prefill(chunk: SeqChunk, group: int, arange: Tensor, dtype: torch.dtype) -> PrefillPlan:
    start, end = chunk.start_pos, chunk.start_pos + len(chunk.token_ids)
    # Row (g, s) of the folded query attends to key j when j <= start + s: a causal mask shifted by start.
    causal = arange[:end][None, :] <= arange[start:end][:, None]  # [S, end]
    return PrefillPlan(chunk.slot, start, additive(causal.repeat(group, 1), dtype))


def prefill_attn(heads: Heads, plan: PrefillPlan, kc: Tensor, vc: Tensor, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """q: [S, H, D], k/v: [S, KV, D] -> [S, H * D]."""
    seq, kv, group, dim = q.shape[0], heads.kv, heads.group, heads.dim
    slot, start, end = plan.slot, plan.start, plan.start + seq
    kc[slot, :, start:end] = k.transpose(0, 1)  # [KV, S, D]
    vc[slot, :, start:end] = v.transpose(0, 1)
    # The G query heads sharing a kv head become G * S query rows: grouped attention without repeating keys.
    folded = q.view(seq, kv, group, dim).permute(1, 2, 0, 3).reshape(1, kv, group * seq, dim)
    out = F.scaled_dot_product_attention(
        folded, kc[slot : slot + 1, :, :end], vc[slot : slot + 1, :, :end], attn_mask=plan.mask, scale=heads.scale
    )  # [1, KV, G * S, D]
    return out.view(kv, group, seq, dim).permute(2, 0, 1, 3).reshape(seq, kv * group * dim)


# -- short multi-token chunks ---------------------------------------------------------------------------------
@dataclass(slots=True)
class PackedPlan:
    """B short chunks (N rows in all) as one padded batch of R rows of S = the longest chunk's query rows each.

    R is B when the keys are gathered, or the width of the slot window when they are read as a view of it."""

    row_slots: Tensor  # [N] slot of each row
    row_pos: Tensor  # [N] position of each row
    slots: Tensor  # [B] slot of each chunk, ascending
    window: tuple[int, int] | None  # (lo, hi): the keys are the view cache[lo:hi]; None: gathered cache[slots]
    length: int  # keys to read: the furthest chunk end
    width: int  # S
    pad_rows: Tensor  # [R * S] the row each padded query row reads (padding repeats the chunk's last row)
    keep: Tensor  # [N] padded row of each real row
    mask: Tensor  # [R, 1, G * S, length]


def plan_packed(chunks: Sequence[SeqChunk], group: int, arange: Tensor, dtype: torch.dtype) -> PackedPlan:
    """``chunks`` in ascending slot order, rows laid out chunk after chunk."""
    dev = arange.device
    lens, starts, slots = [len(c.token_ids) for c in chunks], [c.start_pos for c in chunks], [c.slot for c in chunks]
    width, length = max(lens), max(s + n for s, n in zip(starts, lens, strict=True))
    lo, hi = slots[0], slots[-1] + 1
    window = (lo, hi) if reads_window(lo, hi, len(chunks)) else None
    batch_row = [slot - lo for slot in slots] if window else list(range(len(chunks)))  # chunk b's padded batch row
    owner = dict(zip(batch_row, range(len(chunks)), strict=True))
    first = list(accumulate(lens, initial=0))  # first row of each chunk
    rows = hi - lo if window else len(chunks)
    # An idle window row reads row 0 and starts at position 0: finite scores over cached or zero keys, dropped.
    pad = [first[owner[r]] + min(s, lens[owner[r]] - 1) if r in owner else 0 for r in range(rows) for s in range(width)]
    keep = [batch_row[b] * width + s for b, n in enumerate(lens) for s in range(n)]
    row_start = [starts[owner[r]] if r in owner else 0 for r in range(rows)]
    # Row s of chunk b sees keys j <= start_b + s. A padding row (s >= n_b) sees a few more, harmlessly (dropped).
    q_pos = torch.tensor(row_start, device=dev)[:, None] + arange[:width][None, :]  # [R, S]
    allowed = arange[:length][None, None, :] <= q_pos[:, :, None]  # [R, S, L]
    mask = additive(allowed.repeat(1, group, 1), dtype)[:, None]  # [R, 1, G * S, L]: row g * S + s
    row_slots = torch.tensor([slot for slot, n in zip(slots, lens, strict=True) for _ in range(n)], device=dev)
    row_pos = torch.cat([arange[s : s + n] for s, n in zip(starts, lens, strict=True)])
    return PackedPlan(row_slots, row_pos, torch.tensor(slots, device=dev), window, length, width,
                      torch.tensor(pad, device=dev), torch.tensor(keep, device=dev), mask)


def packed_attn(heads: Heads, plan: PackedPlan, kc: Tensor, vc: Tensor, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
    """q: [N, H, D], k/v: [N, KV, D] -> [N, H * D]."""
    kc[plan.row_slots, :, plan.row_pos] = k  # [N, KV, D]
    vc[plan.row_slots, :, plan.row_pos] = v
    kv, group, dim, width, n = heads.kv, heads.group, heads.dim, plan.width, plan.length
    if plan.window is not None:
        lo, hi = plan.window
        keys, values = kc[lo:hi, :, :n], vc[lo:hi, :, :n]  # [R, KV, L, D], a view
    else:
        keys, values = kc[plan.slots, :, :n], vc[plan.slots, :, :n]  # [B, KV, L, D], a copy
    rows = keys.shape[0]
    padded = q.index_select(0, plan.pad_rows).view(rows, width, kv, group, dim)
    folded = padded.permute(0, 2, 3, 1, 4).reshape(rows, kv, group * width, dim)  # [R, KV, G * S, D]
    out = F.scaled_dot_product_attention(folded, keys, values, attn_mask=plan.mask, scale=heads.scale)
    out = out.view(rows, kv, group, width, dim).permute(0, 3, 1, 2, 4).reshape(rows * width, kv * group * dim)
    return out.index_select(0, plan.keep)


# -- a whole step ---------------------------------------------------------------------------------------------
@dataclass(slots=True)
class StepPlan:
    """A step's rows in execution order (decodes, then short chunks by slot, then long chunks) and who serves them."""

    ids: Tensor  # [T] token ids
    groups: list[tuple[int, int, Attend]]  # rows [a, b) and the attention serving them
    positions: list[Tensor]  # each group's (or, for short chunks, each chunk's) positions; together [T]
    span: tuple[int, int] | None  # when the step is one chunk: its positions are the range [a, b)
    logit_rows: slice | Tensor  # the rows wanting logits, in chunk order
    chunk_rows: list[tuple[int, int]]  # each chunk's rows [a, b) in execution order, chunks in chunk order

    def attend(self, kc: Tensor, vc: Tensor, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        """One layer's attention for every row: q: [T, H, D], k/v: [T, KV, D] -> [T, H * D]."""
        if len(self.groups) == 1:
            return self.groups[0][2](kc, vc, q, k, v)
        return torch.cat([attn(kc, vc, q[a:b], k[a:b], v[a:b]) for a, b, attn in self.groups])


def plan_step(chunks: Sequence[SeqChunk], heads: Heads, arange: Tensor, dtype: torch.dtype) -> StepPlan:
    """Everything about a step that is the same in every layer, built once."""
    decodes = [c for c in chunks if len(c.token_ids) == 1]
    short = sorted((c for c in chunks if 1 < len(c.token_ids) <= PACKED_MAX_TOKENS), key=lambda c: c.slot)
    long = [c for c in chunks if len(c.token_ids) > PACKED_MAX_TOKENS]
    if len(short) == 1:  # nothing to pad against: the plain slices of the one-chunk path
        long, short = short + long, []
    order, positions, row = [*decodes, *short, *long], [], 0
    groups: list[tuple[int, int, Attend]] = []
    if decodes:
        plan = plan_decode(decodes, arange, dtype)
        groups.append((0, len(decodes), partial(decode_attn, heads, plan)))
        positions.append(plan.pos)
        row = len(decodes)
    if short:
        n = sum(len(c.token_ids) for c in short)
        groups.append((row, row + n, partial(packed_attn, heads, plan_packed(short, heads.group, arange, dtype))))
        positions.extend(arange[c.start_pos : c.start_pos + len(c.token_ids)] for c in short)
        row += n
    for c in long:
        n = len(c.token_ids)
        groups.append((row, row + n, partial(prefill_attn, heads, plan_prefill(c, heads.group, arange, dtype))))
        positions.append(arange[c.start_pos : c.start_pos + n])
        row += n
    ids = torch.tensor([t for c in order for t in c.token_ids], device=arange.device)
    span = (chunks[0].start_pos, chunks[0].start_pos + len(chunks[0].token_ids)) if len(chunks) == 1 else None
    end, row = {}, 0  # one past each chunk's last row, in execution order
    for c in order:
        row += len(c.token_ids)
        end[id(c)] = row
    chunk_rows = [(end[id(c)] - len(c.token_ids), end[id(c)]) for c in chunks]
    return StepPlan(ids, groups, positions, span, _logit_rows(chunks, end, arange.device), chunk_rows)


def _logit_rows(chunks: Sequence[SeqChunk], end: dict[int, int], device: torch.device) -> slice | Tensor:
    """Rows of the executed step that want logits: each wanting chunk's last n_logits, chunks in chunk order
    (``end``: one past each chunk's last row in execution order, by ``id``)."""
    rows = [end[id(c)] - c.n_logits + j for c in chunks if c.want_logits for j in range(c.n_logits)]
    if not rows:
        return slice(0, 0)
    if rows == list(range(rows[0], rows[0] + len(rows))):  # the common steps: no copy
        return slice(rows[0], rows[0] + len(rows))
    return torch.tensor(rows, device=device)
