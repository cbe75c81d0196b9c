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

from qwen_stream.engine.hf_runner import HFRunner
from qwen_stream.engine.kv_cache import SlotKVCache, SlotTable
from qwen_stream.engine.runner import ModelRunner, SeqChunk

logger = logging.getLogger(__name__)

NATIVE_MODEL_TYPES = frozenset({"qwen2", "llama", "qwen3"})
# RoPE types whose cos/sin depend on the position alone, so one table computed up front serves every step;
# the others ("dynamic", "longrope") rescale with the sequence length and are recomputed per step.
_STATIC_ROPE_TYPES = frozenset({"default", "linear", "llama3", "yarn"})
_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}


def resolve_device(device: str | torch.device = "cpu") -> torch.device:
    """"auto" means CUDA when present, else CPU; "cuda"/"cuda:N" must actually be available."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a string or torch.device, got {type(device).__name__}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available here; use 'cpu' or 'auto'")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None means float32 on CPU and bfloat16 (float16 where unsupported) on CUDA."""
    if dtype is None:
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point type, got {dtype}")
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"unknown dtype {dtype!r}; use one of {sorted(_DTYPES)} or a torch.dtype")


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
    if len(set(getattr(hf_model, "hf_device_map", {}).values())) > 1:
        return "the model is split over several devices"
    base: Any = getattr(hf_model, "model", None)
    if base is None or not all(hasattr(base, a) for a in ("embed_tokens", "layers", "norm", "rotary_emb")):
        return "unexpected module layout"
    for layer in base.layers:
        linears = (*_attn_linears(layer), layer.self_attn.o_proj, layer.mlp.gate_proj, layer.mlp.up_proj,
                   layer.mlp.down_proj)
        if any(type(m) is not nn.Linear for m in linears):
            return "projections are not plain nn.Linear (quantized or patched weights)"
    return None


def _attn_linears(layer: Any) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
    attn = layer.self_attn
    return attn.q_proj, attn.k_proj, attn.v_proj


def _fuse(linears: Sequence[nn.Linear]) -> tuple[Tensor, Tensor | None]:
    """One weight (and bias) for several projections of the same input, so one matmul replaces three (or two).

    The HF modules are re-pointed at views of the fused tensor: the weights stay in memory once, and the HF
    model keeps working on the same numbers.
    """
    weight = torch.cat([m.weight.detach() for m in linears])
    bias = torch.cat([m.bias.detach() for m in linears]) if all(m.bias is not None for m in linears) else None
    row = 0
    for m in linears:
        n = m.weight.shape[0]
        m.weight.data = weight[row : row + n]
        if bias is not None and m.bias is not None:
            m.bias.data = bias[row : row + n]
        row += n
    return weight, bias


def _detached(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach()


@dataclass(slots=True)
class _Layer:
    """The tensors of one decoder layer, as the forward uses them (weights are [out, in])."""

    attn_norm: Tensor
    qkv_w: Tensor  # [(H + 2 * KV) * D, hidden]
    qkv_b: Tensor | None
    q_norm: Tensor | None  # [D], Qwen3 only
    k_norm: Tensor | None
    o_w: Tensor  # [hidden, H * D]
    o_b: Tensor | None
    mlp_norm: Tensor
    gate_up_w: Tensor  # [2 * intermediate, hidden]
    gate_up_b: Tensor | None
    down_w: Tensor  # [hidden, intermediate]
    down_b: Tensor | None

    @classmethod
    def take(cls, layer: Any) -> _Layer:
        attn, mlp = layer.self_attn, layer.mlp
        qkv_w, qkv_b = _fuse(_attn_linears(layer))
        gate_up_w, gate_up_b = _fuse((mlp.gate_proj, mlp.up_proj))
        q_norm, k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
        return cls(
            attn_norm=layer.input_layernorm.weight.detach(), qkv_w=qkv_w, qkv_b=qkv_b,
            q_norm=None if q_norm is None else q_norm.weight.detach(),
            k_norm=None if k_norm is None else k_norm.weight.detach(),
            o_w=attn.o_proj.weight.detach(), o_b=_detached(attn.o_proj.bias),
            mlp_norm=layer.post_attention_layernorm.weight.detach(),
            gate_up_w=gate_up_w, gate_up_b=gate_up_b,
            down_w=mlp.down_proj.weight.detach(), down_b=_detached(mlp.down_proj.bias),
        )


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
    mask: Tensor | None  # [rows, 1, 1, length] bool, True where a row may attend; None when all may


class NativeRunner:
    """Lean qwen2/llama/qwen3 forward on the HF model's own weights, with a slot KV cache."""

    name = "torch-native"

    def __init__(self, hf_model: nn.Module, *, max_slots: int, max_seq_len: int) -> None:
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
        self._embed: Tensor = base.embed_tokens.weight.detach()  # [vocab_rows, hidden]
        self._layers = [_Layer.take(layer) for layer in base.layers]
        self._norm: Tensor = base.norm.weight.detach()
        self._lm_w: Tensor = model.lm_head.weight.detach()
        self._lm_b = _detached(model.lm_head.bias)
        self.vocab_size = int(self._lm_w.shape[0])
        self._device, self._dtype = self._embed.device, self._embed.dtype
        self._rotary: Any = base.rotary_emb
        self._cache = SlotKVCache(
            n_layers=len(self._layers), max_slots=max_slots, n_kv_heads=self._kv_heads, max_seq_len=max_seq_len,
            head_dim=self._head_dim, dtype=self._dtype, device=self._device,
        )
        self._arange = torch.arange(max_seq_len, device=self._device)
        self._rope_table: tuple[Tensor, Tensor] | None = None
        if getattr(self._rotary, "rope_type", "default") in _STATIC_ROPE_TYPES:
            with torch.inference_mode():
                self._rope_table = self._rope(self._arange[None])  # cos, sin: [1, max_seq_len, 1, D]

    # -- public API ---------------------------------------------------------------------------------------
    def forward(self, chunks: Sequence[SeqChunk]) -> Tensor:
        self._table.check(chunks, self._embed.shape[0])
        with torch.inference_mode():
            parts, order = [], []  # last hidden row of each chunk wanting logits, in execution order
            decodes = [c for c in chunks if len(c.token_ids) == 1]
            for c in chunks:
                if len(c.token_ids) > 1:
                    hidden = self._prefill(c)
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

    def close(self) -> None:
        self._cache.k.clear()
        self._cache.v.clear()

    @property
    def kv_cache_bytes(self) -> int:
        return self._cache.nbytes

    # -- steps ----------------------------------------------------------------------------------------------
    def _prefill(self, chunk: SeqChunk) -> Tensor:
        """One sequence, many tokens (B = 1). Returns the last token's hidden state [1, hidden]."""
        start, n = chunk.start_pos, len(chunk.token_ids)
        end = start + n
        ids = torch.tensor([chunk.token_ids], device=self._device)  # [1, S]
        cos, sin = self._rope_for(self._arange[start:end][None], start, end)
        # Row (g, s) of the folded query attends to key j when j <= start + s: a causal mask shifted by start.
        causal = self._arange[:end][None, :] <= self._arange[start:end][:, None]  # [S, end]
        mask = causal.repeat(self._group, 1)  # [G * S, end]
        slot = chunk.slot
        x = self._layers_forward(ids, cos, sin, lambda i, q, k, v: self._prefill_attn(i, q, k, v, slot, start, mask))
        return x[:, -1]

    def _prefill_attn(self, i: int, q: Tensor, k: Tensor, v: Tensor, slot: int, start: int, mask: Tensor) -> Tensor:
        end = start + q.shape[1]
        kc, vc = self._cache.k[i], self._cache.v[i]
        kc[slot, :, start:end] = k[0].transpose(0, 1)  # [KV, S, D]
        vc[slot, :, start:end] = v[0].transpose(0, 1)
        return self._attend(q, kc[slot : slot + 1, :, :end], vc[slot : slot + 1, :, :end], mask)

    def _decode(self, chunks: list[SeqChunk]) -> Tensor:
        """Many sequences, one token each, at their own positions, as one batch [B, 1]. Returns [B, hidden]."""
        plan = self._plan(chunks)
        ids = torch.tensor([c.token_ids for c in chunks], device=self._device)  # [B, 1]
        if plan.single is not None:
            pos = plan.single[1]
            cos, sin = self._rope_for(self._arange[pos : pos + 1][None], pos, pos + 1)
        else:
            cos, sin = self._rope_for(plan.pos[:, None], None, None)
        x = self._layers_forward(ids, cos, sin, lambda i, q, k, v: self._decode_attn(i, q, k, v, plan))
        return x[:, 0]

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
            mask = (self._arange[:length][None, :] <= row_pos[:, None])[:, None, None, :]
        return _DecodePlan(slots_t, pos_t, None, lo, hi, gather, rows, length, mask)

    def _decode_attn(self, i: int, q: Tensor, k: Tensor, v: Tensor, plan: _DecodePlan) -> Tensor:
        kc, vc, n = self._cache.k[i], self._cache.v[i], plan.length
        if plan.single is not None:
            slot, pos = plan.single
            kc[slot, :, pos] = k[0, 0]  # [KV, D]
            vc[slot, :, pos] = v[0, 0]
            return self._attend(q, kc[slot : slot + 1, :, :n], vc[slot : slot + 1, :, :n], None)
        kc[plan.slots, :, plan.pos] = k[:, 0]  # [B, KV, D]
        vc[plan.slots, :, plan.pos] = v[:, 0]
        if plan.gather:
            return self._attend(q, kc[plan.slots, :, :n], vc[plan.slots, :, :n], plan.mask)
        keys, values = kc[plan.lo : plan.hi, :, :n], vc[plan.lo : plan.hi, :, :n]
        if plan.rows is None:
            return self._attend(q, keys, values, plan.mask)
        # Idle slots inside the window get a zero query that attends to position 0 only; their rows are dropped.
        window_q = q.new_zeros((plan.hi - plan.lo, *q.shape[1:])).index_copy_(0, plan.rows, q)
        return self._attend(window_q, keys, values, plan.mask).index_select(0, plan.rows)

    # -- the model --------------------------------------------------------------------------------------------
    def _layers_forward(self, ids: Tensor, cos: Tensor, sin: Tensor, attn: Any) -> Tensor:
        """ids: [B, S] -> hidden states [B, S, hidden] after the last layer (before the final norm)."""
        heads, kv, dim, eps = self._heads, self._kv_heads, self._head_dim, self._eps
        shape = (self._hidden,)
        x = F.embedding(ids, self._embed)  # [B, S, hidden]
        batch, seq = ids.shape
        for i, layer in enumerate(self._layers):
            h = F.rms_norm(x, shape, layer.attn_norm, eps)
            qkv = F.linear(h, layer.qkv_w, layer.qkv_b).view(batch, seq, heads + 2 * kv, dim)
            q, k = self._rope_qk(qkv, layer, cos, sin)  # [B, S, H, D], [B, S, KV, D]
            x = x + F.linear(attn(i, q, k, qkv[:, :, heads + kv :]), layer.o_w, layer.o_b)
            h = F.rms_norm(x, shape, layer.mlp_norm, eps)
            gate, up = F.linear(h, layer.gate_up_w, layer.gate_up_b).chunk(2, dim=-1)
            x = x + F.linear(F.silu(gate) * up, layer.down_w, layer.down_b)
        return x

    def _rope_qk(self, qkv: Tensor, layer: _Layer, cos: Tensor, sin: Tensor) -> tuple[Tensor, Tensor]:
        heads, kv = self._heads, self._kv_heads
        if layer.q_norm is None:
            qk = qkv[:, :, : heads + kv]  # queries and keys rotate together: one set of ops for both
        else:  # Qwen3 normalises each head of q and k before the rotation
            shape = (self._head_dim,)
            qk = torch.cat((F.rms_norm(qkv[:, :, :heads], shape, layer.q_norm, self._eps),
                            F.rms_norm(qkv[:, :, heads : heads + kv], shape, layer.k_norm, self._eps)), dim=2)
        # rotate_half(x) == roll(x, D/2) with the first half negated; that sign lives in `sin`.
        rotated = qk * cos + qk.roll(self._head_dim // 2, dims=-1) * sin
        return rotated[:, :, :heads], rotated[:, :, heads:]

    def _attend(self, q: Tensor, keys: Tensor, values: Tensor, mask: Tensor | None) -> Tensor:
        """q: [B, S, H, D]; keys/values: [B, KV, L, D] -> [B, S, H * D].

        The G query heads sharing one kv head are folded into extra query rows ([B, KV, G * S, D]), so grouped
        attention needs neither repeated keys nor ``enable_gqa``.
        """
        batch, seq = q.shape[:2]
        kv, group, dim = self._kv_heads, self._group, self._head_dim
        folded = q.reshape(batch, seq, kv, group, dim).permute(0, 2, 3, 1, 4).reshape(batch, kv, group * seq, dim)
        out = F.scaled_dot_product_attention(folded, keys, values, attn_mask=mask, scale=self._scale)
        return out.view(batch, kv, group, seq, dim).permute(0, 3, 1, 2, 4).reshape(batch, seq, self._heads * dim)

    def _rope_for(self, positions: Tensor, start: int | None, end: int | None) -> tuple[Tensor, Tensor]:
        """cos/sin for positions [B, S] as [B, S, 1, D]; a slice of the table when the positions are a range."""
        if self._rope_table is None:
            return self._rope(positions)
        cos, sin = self._rope_table
        if start is not None:
            return cos[:, start:end], sin[:, start:end]
        flat = positions.reshape(-1)
        return cos[0, flat].view(*positions.shape, 1, -1), sin[0, flat].view(*positions.shape, 1, -1)

    def _rope(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """The HF model's own rotary module (honours rope_theta and scaling); sin gets rotate_half's sign."""
        probe = self._embed[:1]  # only its dtype and device matter
        cos, sin = self._rotary(probe, positions)  # [B, S, D]
        half = self._head_dim // 2
        sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
        return cos.unsqueeze(2), sin.unsqueeze(2)

    def _logits(self, chunks: Sequence[SeqChunk], parts: list[Tensor], order: list[SeqChunk]) -> Tensor:
        """Final norm and lm_head on the rows that want logits only, returned in chunk order: [n, vocab] float32."""
        if not parts:
            return torch.empty((0, self.vocab_size), dtype=torch.float32, device=self._device)
        hidden = parts[0] if len(parts) == 1 else torch.cat(parts)  # [n_exec, hidden]
        wanted = [c for c in chunks if c.want_logits]
        if len(order) != len(wanted) or any(a is not b for a, b in zip(order, wanted, strict=True)):
            where = {id(c): row for row, c in enumerate(order)}
            index = torch.tensor([where[id(c)] for c in wanted], device=self._device)
            hidden = hidden.index_select(0, index)
        hidden = F.rms_norm(hidden, (self._hidden,), self._norm, self._eps)
        return F.linear(hidden, self._lm_w, self._lm_b).float()


def build_torch_runner(
    hf_model: nn.Module,
    *,
    max_slots: int,
    max_seq_len: int,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
) -> ModelRunner:
    """A runner over a loaded HF causal LM: native for qwen2/llama/qwen3, the HF forward otherwise.

    The model is moved to ``device``/``dtype`` in place (its tensors are reused, never copied twice) and put in
    eval mode; the native runner also re-points its q/k/v and gate/up weights at fused tensors.
    """
    SlotTable(max_slots, max_seq_len)  # validates both before any tensor moves
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    device_map: dict[str, Any] = getattr(hf_model, "hf_device_map", None) or {}
    if len(set(device_map.values())) <= 1:  # a model split by device_map="auto" stays where accelerate put it
        hf_model.to(device=dev, dtype=dt)
    hf_model.eval()
    reason = native_unsupported_reason(hf_model)
    if reason is None:
        return NativeRunner(hf_model, max_slots=max_slots, max_seq_len=max_seq_len)
    logger.warning("no native PyTorch runner for this model (%s); using the slower Hugging Face forward", reason)
    return HFRunner(hf_model, max_slots=max_slots, max_seq_len=max_seq_len)
