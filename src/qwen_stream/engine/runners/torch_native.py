"""PyTorch model runners for Hugging Face causal LMs.

``build_torch_runner`` returns a :class:`NativeRunner` ("torch-native") for the architectures we run ourselves
(qwen2, llama, qwen3): a lean forward over the HF model's own weight tensors and a preallocated slot KV cache, so
sequences at different positions decode together in one batched step. Any other architecture gets the slower
:class:`~qwen_stream.engine.runners.torch_hf.HFRunner` ("torch-hf"), with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qwen_stream.devices import resolve_device, resolve_dtype
from qwen_stream.engine.runners.base import ModelRunner, SeqChunk
from qwen_stream.engine.runners.kv_cache import SlotKVCache, SlotTable
from qwen_stream.engine.runners.quantize import int8_available, quantize_int8
from qwen_stream.engine.runners.smooth import calibrate, default_calibration_ids, smoothing_scales
from qwen_stream.engine.runners.torch_attention import Heads, StepPlan, plan_step
from qwen_stream.engine.runners.torch_hf import HFRunner
from qwen_stream.engine.runners.torch_layers import (
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




class NativeRunner:
    """Lean qwen2/llama/qwen3 forward on the HF model's own weights, with a slot KV cache."""

    name = "torch-native"
    can_rewind = True  # a chunk may start inside a slot's cached part: the scheduler reuses prefixes

    def __init__(self, hf_model: nn.Module, *, max_slots: int, max_seq_len: int, quantize: str | None = None,
                 calibration_ids: Sequence[int] | None = None, progress: bool = False, logits: bool = True) -> None:
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
        self._attn_heads = Heads(self._kv_heads, self._group, self._head_dim, self._head_dim**-0.5)
        self._device, self._dtype = base.embed_tokens.weight.device, base.embed_tokens.weight.dtype
        self._rms = RMSNorm(self._hidden, self._eps, self._dtype, self._device)
        self._head_rms = RMSNorm(self._head_dim, self._eps, self._dtype, self._device)
        int8 = _check_quantize(quantize, self._dtype, self._device)
        self.quantize = quantize
        self._lm_t: Weight | None = None  # None: keys and values only (logits=False, the fast prefill's use)
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
            if logits:
                self._lm_t = quantize_int8(model.lm_head.weight.detach().float() * s_head)
        else:
            self._layers = [LayerWeights.take(layer, self._rms, self._head_rms) for layer in base.layers]
            self._norm = self._rms.prepare(base.norm.weight)
            # [hidden, vocab]; with tied embeddings the embedding below becomes a view of the same memory
            self._lm_t = split_k(to_layout(model.lm_head.weight, (model.lm_head,)))
        self._embed: Tensor = base.embed_tokens.weight.detach()  # [vocab_rows, hidden], maybe a strided view
        if not logits:  # no lm_head shares it: a float16 copy halves the largest table (rows cast back when read)
            self._embed = self._embed.to(torch.float16)
        # The last norm as the model has it, for hidden states (int8 folds a smoothing into self._norm's copy).
        self._final_norm = self._norm if not int8 else self._rms.prepare(base.norm.weight)
        self.embedding_width = self._hidden
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
        """One pass over the layers for every chunk: their rows stacked, attention split by chunk (see plan_step)."""
        return self._run(chunks, hidden=False)[0]

    def forward_with_hidden(self, chunks: Sequence[SeqChunk]) -> tuple[Tensor, list[Tensor]]:
        """``forward``'s logits, and each ``hidden`` chunk's final hidden states (after the last norm, before the
        lm_head): float32 [len(token_ids), hidden], in chunk order. Same pass, same rows as any step."""
        return self._run(chunks, hidden=True)

    def _run(self, chunks: Sequence[SeqChunk], *, hidden: bool) -> tuple[Tensor, list[Tensor]]:
        if not self._cache.k:
            raise RuntimeError("this runner is closed")
        self._table.check(chunks, self._embed.shape[0])
        self._cache.ensure(max((c.start_pos + len(c.token_ids) for c in chunks), default=0))
        if not chunks:
            return self._no_logits(), []
        with torch.inference_mode():
            plan = plan_step(chunks, self._attn_heads, self._arange, self._dtype)
            cos, sin = self._rope_rows(plan)
            k_cache, v_cache = self._cache.k, self._cache.v
            x = self._layers_forward(plan.ids, cos, sin,
                                     lambda i, q, k, v: plan.attend(k_cache[i], v_cache[i], q, k, v))  # [T, hidden]
            for c in chunks:
                self._table.advance(c)
            states = [self._rms(x[a:b], self._final_norm).float() for c, (a, b) in zip(chunks, plan.chunk_rows,
                                                                                      strict=True) if c.hidden]
            return self._logits(x[plan.logit_rows]), states if hidden else []

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

    def put_kv(self, slot: int, k: Sequence[Tensor], v: Sequence[Tensor]) -> None:
        """The slot holds exactly these positions from 0: per layer K and V [positions, kv_heads, head_dim] (keys
        after RoPE, in this model's head layout). The fast prefill brings llama.cpp's cached prefix in this way."""
        length = int(k[0].shape[0]) if k else 0
        self._table.free(slot)
        self._cache.ensure(length)
        self._table.lengths[slot] = length
        with torch.inference_mode():
            for cache_k, cache_v, new_k, new_v in zip(self._cache.k, self._cache.v, k, v, strict=True):
                cache_k[slot, :, :length] = new_k.transpose(0, 1)
                cache_v[slot, :, :length] = new_v.transpose(0, 1)

    def get_kv(self, slot: int, start: int, end: int) -> tuple[list[Tensor], list[Tensor]]:
        """Positions [start, end) of the slot's K and V per layer, [end - start, kv_heads, head_dim] copies."""
        return ([k[slot, :, start:end].transpose(0, 1).contiguous() for k in self._cache.k],
                [v[slot, :, start:end].transpose(0, 1).contiguous() for v in self._cache.v])

    def close(self) -> None:
        self._cache.k.clear()
        self._cache.v.clear()

    @property
    def n_layers(self) -> int:
        return len(self._layers)

    @property
    def kv_shape(self) -> tuple[int, int]:
        """(kv_heads, head_dim) of one position's keys (or values) in one layer."""
        return self._kv_heads, self._head_dim

    @property
    def kv_cache_bytes(self) -> int:
        return self._cache.nbytes

    # -- the model --------------------------------------------------------------------------------------------
    def _layers_forward(self, ids: Tensor, cos: Tensor, sin: Tensor, attn: Any) -> Tensor:
        """ids: [T] -> hidden states [T, hidden] after the last layer (before the final norm).

        Tokens are rows of 2-D tensors throughout (every chunk of the step stacked): one matmul per projection for
        all of them, and the fewest ops per layer, which is what a small model on a CPU pays for."""
        heads, kv, dim, rms = self._heads, self._kv_heads, self._head_dim, self._rms
        x = F.embedding(ids, self._embed).to(self._dtype)  # [T, hidden]
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

    def _rope_rows(self, plan: StepPlan) -> tuple[Tensor, Tensor]:
        """cos/sin for every row of the step, [T, 1, D]: a slice of the table for one chunk, else a gather."""
        if self._rope_table is None:  # length-dependent RoPE: computed per chunk (one decode batch) as if alone
            parts = [self._rope(p) for p in plan.positions]
            if len(parts) == 1:
                return parts[0]
            return torch.cat([c for c, _ in parts]), torch.cat([s for _, s in parts])
        cos, sin = self._rope_table
        if plan.span is not None:
            return cos[plan.span[0] : plan.span[1]], sin[plan.span[0] : plan.span[1]]
        pos = plan.positions[0] if len(plan.positions) == 1 else torch.cat(plan.positions)
        return cos[pos], sin[pos]

    def _rope(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """The HF model's own rotary module (honours rope_theta and scaling); sin gets rotate_half's sign."""
        probe = self._embed[:1]  # only its dtype and device matter
        cos, sin = self._rotary(probe, positions[None])  # [1, T, D]
        half = self._head_dim // 2
        sin = torch.cat((-sin[..., :half], sin[..., half:]), dim=-1)
        return cos[0].unsqueeze(1), sin[0].unsqueeze(1)

    def _logits(self, hidden: Tensor) -> Tensor:
        """Final norm and lm_head on the rows that want logits only (already in chunk order): [n, vocab] float32."""
        if not hidden.shape[0]:
            return self._no_logits()
        if self._lm_t is None:
            raise ValueError("this runner computes keys and values only (built with logits=False)")
        return mm(self._rms(hidden, self._norm), self._lm_t, self._lm_b).float()

    def _no_logits(self) -> Tensor:
        return torch.empty((0, self.vocab_size), dtype=torch.float32, device=self._device)


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
