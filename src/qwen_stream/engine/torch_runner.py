"""PyTorch model runners for Hugging Face causal LMs.

``build_torch_runner`` returns a :class:`NativeRunner` ("torch-native") for the architectures we run ourselves
(qwen2, llama, qwen3): a lean forward over the HF model's own weight tensors and a preallocated slot KV cache, so
sequences at different positions decode together in one batched step. Any other architecture gets the slower
:class:`~qwen_stream.engine.hf_runner.HFRunner` ("torch-hf"), with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qwen_stream.devices import resolve_device, resolve_dtype
from qwen_stream.engine.hf_runner import HFRunner
from qwen_stream.engine.kv_cache import SlotKVCache, SlotTable
from qwen_stream.engine.quantize import int8_available, quantize_int8
from qwen_stream.engine.runner import ModelRunner, SeqChunk
from qwen_stream.engine.smooth import calibrate, default_calibration_ids, smoothing_scales
from qwen_stream.engine.torch_layers import (
    LayerWeights,
    RMSNorm,
    Weight,
    attn_linears,
    detached,
    mm,
    residual_mm,
    split_k,
    to_layout,
)

logger = logging.getLogger(__name__)

NATIVE_MODEL_TYPES = frozenset({"qwen2", "llama", "qwen3"})
# RoPE types whose cos/sin depend on the position alone, so one table computed up front serves every step;
# the others ("dynamic", "longrope") rescale with the sequence length and are recomputed per step.
_STATIC_ROPE_TYPES = frozenset({"default", "linear", "llama3", "yarn"})



def native_unsupported_reason(hf_model: nn.Module) -> str | None:
    """Why the native runner cannot run this model (None when it can)."""
    config: Any = hf_model.config
    model_type = getattr(config, "model_type", None)
    if model_type not in NATIVE_MODEL_TYPES:
        return f"model_type {model_type!r} is not one of {sorted(NATIVE_MODEL_TYPES)}"
    if getattr(config, "hidden_act", "silu") not in ("silu", "swish"):
        return f"activation {config.hidden_act!r} is not SwiGLU"
    if "sliding_attention" in (getattr(config, "layer_types", None) or ()):
        return "sliding-window attention layers"
    if len(set((getattr(hf_model, "hf_device_map", None) or {}).values())) > 1:
        return "the model is split over several devices"
    rope = getattr(config, "rope_parameters", None) or {}
    if float(rope.get("partial_rotary_factor", getattr(config, "partial_rotary_factor", 1.0)) or 1.0) != 1.0:
        return "partial rotary embeddings"
    base: Any = getattr(hf_model, "model", None)
    if base is None or not all(hasattr(base, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return "unexpected module layout"
    for layer in base.layers:
        linears = (*attn_linears(layer), layer.self_attn.o_proj, layer.mlp.gate_proj, layer.mlp.up_proj,
                   layer.mlp.down_proj)
        if any(type(m) is not nn.Linear for m in linears):
            return "projections are not plain nn.Linear (quantized or patched weights)"
    return None




@dataclass(slots=True)
class _DecodePlan:
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


class NativeRunner:
    """Lean qwen2/llama/qwen3 forward on the HF model's own weights, with a slot KV cache."""

    name = "torch-native"
    can_rewind = True  # a chunk may start inside a slot's cached part: the scheduler reuses prefixes

    def __init__(self, hf_model: nn.Module, *, max_slots: int, max_seq_len: int, quantize: str | None = None,
                 calibration_ids: Sequence[int] | None = None, progress: bool = False) -> None:
        model: Any = hf_model  # HF attributes are dynamic; their types are checked by the tests
        config, base = model.config, model.model
        self._table = SlotTable(max_slots, max_seq_len)
        self.max_slots, self.max_seq_len = max_slots, max_seq_len
        self._heads = int(config.num_attention_heads)
        self._kv_heads = int(getattr(config, "num_key_value_heads", None) or self._heads)
        self._head_dim = int(getattr(config, "head_dim", None) or config.hidden_size // self._heads)
        self._group = self._heads // self._kv_heads
        self._hidden = int(config.hidden_size)
        self._eps = float(config.rms_norm_eps)
        self._scale = self._head_dim**-0.5
        self._device, self._dtype = base.embed_tokens.weight.device, base.embed_tokens.weight.dtype
        self._rms = RMSNorm(self._hidden, self._eps, self._dtype, self._device)
        self._head_rms = RMSNorm(self._head_dim, self._eps, self._dtype, self._device)
        int8 = _check_quantize(quantize, self._dtype, self._device)
        self.quantize = quantize
        self._lm_t: Weight
        if int8:
            ids = list(calibration_ids or default_calibration_ids(int(base.embed_tokens.weight.shape[0])))
            logger.info("int8: calibrating activation ranges over %d tokens, then quantizing", len(ids))
            ranges = calibrate(model, ids)
            from tqdm.auto import tqdm

            layers = tqdm(list(zip(base.layers, ranges.layers, strict=True)), desc="int8: quantizing layers",
                          unit="layer", disable=not progress, leave=False)
            self._layers = [LayerWeights.take_int8(layer, self._rms, self._head_rms, r) for layer, r in layers]
            # The lm_head is the largest single matrix (a fifth of SmolLM2's bytes per step): int8 too.
            s_head = smoothing_scales(ranges.head_in, model.lm_head.weight)
            self._norm = self._rms.prepare(base.norm.weight.detach().float() / s_head)
            self._lm_t = quantize_int8(model.lm_head.weight.detach().float() * s_head)
        else:
            self._layers = [LayerWeights.take(layer, self._rms, self._head_rms) for layer in base.layers]
            self._norm = self._rms.prepare(base.norm.weight)
            # [hidden, vocab]; with tied embeddings the embedding below becomes a view of the same memory
            self._lm_t = split_k(to_layout(model.lm_head.weight, (model.lm_head,)))
        self._embed: Tensor = base.embed_tokens.weight.detach()  # [vocab_rows, hidden], maybe a strided view
        self._lm_b = detached(model.lm_head.bias)
        self.vocab_size = int(model.lm_head.weight.shape[0])
        self._rotary: Any = base.rotary_emb
        self._cache = SlotKVCache(
            n_layers=len(self._layers), max_slots=max_slots, n_kv_heads=self._kv_heads, max_seq_len=max_seq_len,
            head_dim=self._head_dim, dtype=self._dtype, device=self._device,
        )
        self._arange = torch.arange(max_seq_len, device=self._device)
        self._rope_table: tuple[Tensor, Tensor] | None = None
        if getattr(self._rotary, "rope_type", "default") in _STATIC_ROPE_TYPES:
            with torch.inference_mode():
                self._rope_table = self._rope(self._arange)  # cos, sin: [max_seq_len, 1, D]

    # -- public API ---------------------------------------------------------------------------------------
    def forward(self, chunks: Sequence[SeqChunk]) -> Tensor:
        if not self._cache.k:
            raise RuntimeError("this runner is closed")
        self._table.check(chunks, self._embed.shape[0])
        self._cache.ensure(max((c.start_pos + len(c.token_ids) for c in chunks), default=0))
        with torch.inference_mode():
            parts, order = [], []  # hidden rows of each chunk wanting logits, in execution order
            decodes = [c for c in chunks if len(c.token_ids) == 1]
            for c in chunks:
                if len(c.token_ids) > 1:
                    hidden = self._prefill(c)  # [logit_rows, hidden]
                    if c.want_logits:
                        parts.append(hidden)
                        order.append(c)
            if decodes:
                parts.append(self._decode(decodes))
                order.extend(decodes)
            for c in chunks:
                self._table.advance(c)
            return self._logits(chunks, parts, order)

    def free_slot(self, slot: int) -> None:
        # Nothing to zero: positions at or past a sequence's length are never attended to.
        self._table.free(slot)

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        """Slot dst takes the first ``length`` positions of slot src's KV (a shared system prompt, say)."""
        self._table.copy_prefix(src, dst, length)
        with torch.inference_mode():
            for k, v in zip(self._cache.k, self._cache.v, strict=True):
                k[dst, :, :length] = k[src, :, :length]
                v[dst, :, :length] = v[src, :, :length]

    def close(self) -> None:
        self._cache.k.clear()
        self._cache.v.clear()

    @property
    def kv_cache_bytes(self) -> int:
        return self._cache.nbytes

    # -- steps ----------------------------------------------------------------------------------------------
    def _prefill(self, chunk: SeqChunk) -> Tensor:
        """One sequence, many tokens. Returns the hidden states of its last ``n_logits`` tokens [n, hidden]."""
        start, end = chunk.start_pos, chunk.start_pos + len(chunk.token_ids)
        ids = torch.tensor(chunk.token_ids, device=self._device)  # [S]
        cos, sin = self._rope_for(self._arange[start:end], start, end)
        # Row (g, s) of the folded query attends to key j when j <= start + s: a causal mask shifted by start.
        causal = self._arange[:end][None, :] <= self._arange[start:end][:, None]  # [S, end]
        mask = self._additive(causal.repeat(self._group, 1))  # [G * S, end]
        slot = chunk.slot
        x = self._layers_forward(ids, cos, sin, lambda i, q, k, v: self._prefill_attn(i, q, k, v, slot, start, mask))
        return x[-chunk.n_logits:]

    def _prefill_attn(self, i: int, q: Tensor, k: Tensor, v: Tensor, slot: int, start: int, mask: Tensor) -> Tensor:
        """q: [S, H, D], k/v: [S, KV, D] -> [S, H * D]."""
        seq, kv, group, dim = q.shape[0], self._kv_heads, self._group, self._head_dim
        end = start + seq
        kc, vc = self._cache.k[i], self._cache.v[i]
        kc[slot, :, start:end] = k.transpose(0, 1)  # [KV, S, D]
        vc[slot, :, start:end] = v.transpose(0, 1)
        # The G query heads sharing a kv head become G * S query rows: grouped attention without repeating keys.
        folded = q.view(seq, kv, group, dim).permute(1, 2, 0, 3).reshape(1, kv, group * seq, dim)
        out = F.scaled_dot_product_attention(
            folded, kc[slot : slot + 1, :, :end], vc[slot : slot + 1, :, :end], attn_mask=mask, scale=self._scale
        )  # [1, KV, G * S, D]
        return out.view(kv, group, seq, dim).permute(2, 0, 1, 3).reshape(seq, self._heads * dim)

    def _decode(self, chunks: list[SeqChunk]) -> Tensor:
        """Many sequences, one token each, at their own positions, as one batch. Returns [B, hidden]."""
        plan = self._plan(chunks)
        ids = torch.tensor([c.token_ids[0] for c in chunks], device=self._device)  # [B]
        if plan.single is not None:
            pos = plan.single[1]
            cos, sin = self._rope_for(self._arange[pos : pos + 1], pos, pos + 1)
        else:
            cos, sin = self._rope_for(plan.pos, None, None)
        return self._layers_forward(ids, cos, sin, lambda i, q, k, v: self._decode_attn(i, q, k, v, plan))

    def _plan(self, chunks: list[SeqChunk]) -> _DecodePlan:
        slots = [c.slot for c in chunks]
        pos = [c.start_pos for c in chunks]
        length = max(pos) + 1
        lo, hi = min(slots), max(slots) + 1
        dev = self._device
        slots_t, pos_t = torch.tensor(slots, device=dev), torch.tensor(pos, device=dev)
        if len(chunks) == 1:
            return _DecodePlan(slots_t, pos_t, (slots[0], pos[0]), lo, hi, False, None, length, None)
        # A window over neighbouring slots is a view; reading a few idle slots beats copying when they are few.
        gather = hi - lo > 2 * len(chunks)
        rows = None
        if gather or slots == list(range(lo, hi)):
            row_pos = pos_t
        else:
            rows = slots_t - lo
            row_pos = torch.zeros(hi - lo, dtype=pos_t.dtype, device=dev).index_copy_(0, rows, pos_t)
        mask = None
        if min(pos) != max(pos) or rows is not None:
            mask = self._additive(self._arange[:length][None, :] <= row_pos[:, None])[:, None, None, :]
        return _DecodePlan(slots_t, pos_t, None, lo, hi, gather, rows, length, mask)

    def _additive(self, allowed: Tensor) -> Tensor:
        """A bool mask as the float one SDPA adds to its scores, made once per step rather than once per layer."""
        return torch.zeros(allowed.shape, dtype=self._dtype, device=self._device).masked_fill_(~allowed, -torch.inf)

    def _decode_attn(self, i: int, q: Tensor, k: Tensor, v: Tensor, plan: _DecodePlan) -> Tensor:
        """q: [B, H, D], k/v: [B, KV, D] -> [B, H * D]."""
        kc, vc, n = self._cache.k[i], self._cache.v[i], plan.length
        if plan.single is not None:
            slot, pos = plan.single
            kc[slot, :, pos] = k[0]  # [KV, D]
            vc[slot, :, pos] = v[0]
            return self._attend_one(q, kc[slot : slot + 1, :, :n], vc[slot : slot + 1, :, :n], None)
        kc[plan.slots, :, plan.pos] = k  # [B, KV, D]
        vc[plan.slots, :, plan.pos] = v
        if plan.gather:
            return self._attend_one(q, kc[plan.slots, :, :n], vc[plan.slots, :, :n], plan.mask)
        keys, values = kc[plan.lo : plan.hi, :, :n], vc[plan.lo : plan.hi, :, :n]
        if plan.rows is None:
            return self._attend_one(q, keys, values, plan.mask)
        # Idle slots inside the window get a zero query that attends to position 0 only; their rows are dropped.
        window_q = q.new_zeros((plan.hi - plan.lo, *q.shape[1:])).index_copy_(0, plan.rows, q)
        return self._attend_one(window_q, keys, values, plan.mask).index_select(0, plan.rows)

    def _attend_one(self, q: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None) -> Tensor:
        """One query token per row. q: [B, H, D]; keys/values: [B, KV, L, D] -> [B, H * D].

        The G query heads sharing a kv head are G query rows ([B, KV, G, D], a view): no repeated keys."""
        batch = q.shape[0]
        folded = q.view(batch, self._kv_heads, self._group, self._head_dim)
        out = F.scaled_dot_product_attention(folded, keys, values, attn_mask=mask, scale=self._scale)
        return out.view(batch, self._heads * self._head_dim)

    # -- the model --------------------------------------------------------------------------------------------
    def _layers_forward(self, ids: Tensor, cos: Tensor, sin: Tensor, attn: Any) -> Tensor:
        """ids: [T] -> hidden states [T, hidden] after the last layer (before the final norm).

        Tokens are rows of 2-D tensors throughout (a decode batch or one prefill chunk): the fewest ops per layer,
        which is what a small model on a CPU pays for."""
        heads, kv, dim, rms = self._heads, self._kv_heads, self._head_dim, self._rms
        x = F.embedding(ids, self._embed)  # [T, hidden]
        for i, layer in enumerate(self._layers):
            qkv = mm(rms(x, layer.attn_norm), layer.qkv_t, layer.qkv_b).view(-1, heads + 2 * kv, dim)
            q, k = self._rope_qk(qkv, layer, cos, sin)  # qkv: [T, H + 2 * KV, D] -> q: [T, H, D], k: [T, KV, D]
            x = residual_mm(x, attn(i, q, k, qkv[:, heads + kv :]), layer.o_t, layer.o_b)
            gate, up = mm(rms(x, layer.mlp_norm), layer.gate_up_t, layer.gate_up_b).chunk(2, dim=-1)
            x = residual_mm(x, F.silu(gate).mul_(up), layer.down_t, layer.down_b)
        return x

    def _rope_qk(self, qkv: Tensor, layer: LayerWeights, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
        heads, kv = self._heads, self._kv_heads
        if layer.q_norm is None or layer.k_norm is None:
            qk = qkv[:, : heads + kv]  # queries and keys rotate together: one set of ops for both
        else:  # Qwen3 normalises each head of q and k before the rotation
            head_rms = self._head_rms
            qk = torch.cat((head_rms(qkv[:, :heads], layer.q_norm), head_rms(qkv[:, heads : heads + kv], layer.k_norm)),
                           dim=1)
        # rotate_half(x) == roll(x, D/2) with the first half negated; that sign lives in `sin`.
        rotated = torch.addcmul(qk * cos, qk.roll(self._head_dim // 2, dims=-1), sin)
        return rotated[:, :heads], rotated[:, heads:]

    def _rope_for(self, positions: Tensor, start: int | None, end: int | None) -> tuple[Tensor, Tensor]:
        """cos/sin for positions [T] as [T, 1, D]; a slice of the table when the positions are a range."""
        if self._rope_table is None:
            return self._rope(positions)
        cos, sin = self._rope_table
        if start is not None:
            return cos[start:end], sin[start:end]
        return cos[positions], sin[positions]

    def _rope(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """The HF model's own rotary module (honours rope_theta and scaling); sin gets rotate_half's sign."""
        probe = self._embed[:1]  # only its dtype and device matter
        cos, sin = self._rotary(probe, positions[None])  # [1, T, D]
        half = self._head_dim // 2
        sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
        return cos[0].unsqueeze(1), sin[0].unsqueeze(1)

    def _logits(self, chunks: Sequence[SeqChunk], parts: list[Tensor], order: list[SeqChunk]) -> Tensor:
        """Final norm and lm_head on the rows that want logits only, returned in chunk order: [n, vocab] float32."""
        if not parts:
            return torch.empty((0, self.vocab_size), dtype=torch.float32, device=self._device)
        hidden = parts[0] if len(parts) == 1 else torch.cat(parts)  # [n_exec, hidden]
        wanted = [c for c in chunks if c.want_logits]
        if len(order) != len(wanted) or any(a is not b for a, b in zip(order, wanted, strict=True)):
            first, row = {}, 0  # each chunk's first row in execution order; a chunk owns logit_rows rows
            for c in order:
                first[id(c)] = row
                row += c.logit_rows
            index = torch.tensor([first[id(c)] + j for c in wanted for j in range(c.logit_rows)], device=self._device)
            hidden = hidden.index_select(0, index)
        hidden = self._rms(hidden, self._norm)
        return mm(hidden, self._lm_t, self._lm_b).float()


def _check_quantize(quantize: str | None, dtype: torch.dtype, device: torch.device) -> bool:
    """Whether to use int8 weights; ValueError for a mode or pairing that cannot run."""
    if quantize is None:
        return False
    if quantize != "int8":
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    if device.type != "cpu":
        raise ValueError(f"int8 weights are a CPU option; on {device.type} use bfloat16 or float16 weights")
    if not int8_available():
        raise ValueError("this torch build lacks fbgemm's int8 kernels (x86 CPUs only)")
    if dtype != torch.float32:
        raise ValueError(f"int8 weights run with float32 activations; got dtype {dtype} (leave dtype unset)")
    return True


def build_torch_runner(
    hf_model: nn.Module,
    *,
    max_slots: int,
    max_seq_len: int,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    quantize: str | None = None,
    calibration_ids: Sequence[int] | None = None,
    progress: bool = False,
) -> ModelRunner:
    """A runner over a loaded HF causal LM: native for qwen2/llama/qwen3, the HF forward otherwise.

    The model is moved to ``device``/``dtype`` in place (its tensors are reused, never copied twice) and put in
    eval mode; the native runner also re-points its q/k/v and gate/up weights at fused tensors.
    ``quantize="int8"``: int8 projections in the native runner (fbgemm, float32 activations; see quantize.py).
    The model's own float weights stay in memory too (the HF model keeps working), so it costs memory and saves
    time. ``calibration_ids``: tokens whose activation ranges set the int8 smoothing (see smooth.py); the factory
    passes real text, the default is a fixed sample of the vocabulary. ``progress``: a bar while int8 quantizes.
    """
    SlotTable(max_slots, max_seq_len)  # validates both before any tensor moves
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    _check_quantize(quantize, dt, dev)  # before the model moves
    device_map: dict[str, Any] = getattr(hf_model, "hf_device_map", None) or {}
    if len(set(device_map.values())) <= 1:  # a model split by device_map="auto" stays where accelerate put it
        hf_model.to(device=dev, dtype=dt)
    hf_model.eval()
    reason = native_unsupported_reason(hf_model)
    if reason is None:
        return NativeRunner(hf_model, max_slots=max_slots, max_seq_len=max_seq_len, quantize=quantize,
                            calibration_ids=calibration_ids, progress=progress)
    if quantize:
        logger.warning("quantize=%r only applies to the native runner; ignored", quantize)
    logger.warning("no native PyTorch runner for this model (%s); using the slower Hugging Face forward", reason)
    return HFRunner(hf_model, max_slots=max_slots, max_seq_len=max_seq_len)
