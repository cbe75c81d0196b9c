"""The tensors of the native PyTorch runner's decoder layers and the few fused ops it runs them with.

Kept apart from the runner's step logic (torch_native.py): these functions decide how weights are laid out
(fused, transposed, optionally int8) and how the fewest ops compute norms and projections on a CPU, where per-op
overhead dominates small models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qwen_stream.engine.runners.quantize import Int8Weight, quantize_int8
from qwen_stream.engine.runners.smooth import LayerRanges, smoothing_scales


def attn_linears(layer: Any) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
    attn = layer.self_attn
    return attn.q_proj, attn.k_proj, attn.v_proj


def stack(linears: Sequence[nn.Linear]) -> tuple[Tensor, Tensor | None]:
    """Several projections of the same input as one weight [out, in] (and bias): new tensors, modules untouched."""
    weight = torch.cat([m.weight.detach() for m in linears])
    biases = [m.bias for m in linears]
    bias = torch.cat([b.detach() for b in biases if b is not None]) if all(b is not None for b in biases) else None
    return weight, bias


def fuse(linears: Sequence[nn.Linear]) -> tuple[Tensor, Tensor | None]:
    """``stack``, with the HF modules re-pointed at views of the result, so one matmul replaces three (or two)
    while the weights stay in memory once (``to_layout`` may move them again)."""
    weight, bias = stack(linears)
    row = 0
    for m in linears:
        n = m.weight.shape[0]
        m.weight.data = weight[row : row + n]
        if bias is not None and m.bias is not None:
            m.bias.data = bias[row : row + n]
        row += n
    return weight, bias


def transposed_contiguous(dtype: torch.dtype) -> bool:
    """Whether projections run fastest on a contiguous [in, out] copy (True) or on a [out, in] weight read
    through a transposed view (False).

    Measured on this machine's MKL/oneDNN (2-core AVX2, weights streamed from DRAM, one token): float32 reads a
    contiguous [in, out] at 12.6 GB/s against 9.1 through the view (a 1.4x faster decode step), while bfloat16
    and float16 fall to ~1 GB/s on a contiguous [in, out] and want the view.
    """
    return dtype == torch.float32


def to_layout(weight: Tensor, linears: Sequence[nn.Linear]) -> Tensor:
    """The [out, in] weight as the [in, out] operand of ``mm``, stored once.

    In float32 the data is moved to a contiguous [in, out] tensor and the HF modules (``linears``, whose weights
    are consecutive row blocks of ``weight``) are re-pointed at views of it, so the HF model still computes the
    same numbers from the same memory; in other dtypes it is a transposed view of ``weight`` itself.
    """
    weight = weight.detach()
    if not transposed_contiguous(weight.dtype):
        return weight.t()
    weight_t = weight.t().contiguous()
    col = 0
    for m in linears:
        n = m.weight.shape[0]
        m.weight.data = weight_t[:, col : col + n].t()
        col += n
    return weight_t


# Products with at most this many rows (decode batches) are split over threads; prefill GEMMs thread well as one.
SPLIT_MAX_ROWS = 16


class SplitKWeight:
    """A float32 [in, out] weight whose products with a few rows run as ``parts`` partial products, one per thread.

    MKL computes a matrix-vector product of a decoder layer's sizes on one core. Cutting ``in`` into ``parts`` row
    blocks makes it one ``bmm`` of ``parts`` independent products, which torch spreads over the threads, then one
    sum. Measured on a 2-core EPYC with SmolLM2's 120 decode projections: weights read at 15.6 GB/s as ``mm`` and
    23.2 GB/s split in two (one row: 25.2 -> 18.3 ms; four rows: 53.5 -> 30.6 ms); the machine streams 27.5 GB/s.
    ``weight_t`` stays the one copy in memory: ``blocks`` is a view of it.
    """

    __slots__ = ("blocks", "parts", "weight_t")

    def __init__(self, weight_t: Tensor, parts: int) -> None:
        self.weight_t, self.parts = weight_t, parts
        self.blocks = weight_t.view(parts, weight_t.shape[0] // parts, weight_t.shape[1])

    def matmul(self, x: Tensor) -> Tensor:
        rows = x.shape[0]
        if rows > SPLIT_MAX_ROWS:
            return torch.mm(x, self.weight_t)
        return torch.bmm(x.reshape(rows, self.parts, -1).transpose(0, 1), self.blocks).sum(0)


def split_k(weight_t: Tensor) -> Tensor | SplitKWeight:
    """The [in, out] weight split over torch's threads for small products when that applies (CPU float32)."""
    parts = torch.get_num_threads()
    if (parts < 2 or weight_t.dtype != torch.float32 or weight_t.device.type != "cpu"
            or not weight_t.is_contiguous() or weight_t.shape[0] % parts):
        return weight_t
    return SplitKWeight(weight_t, parts)


Weight = Tensor | SplitKWeight | Int8Weight  # float [in, out] (see to_layout), maybe split; or int8 for fbgemm


def detached(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach()


@dataclass(slots=True)
class LayerWeights:
    """The tensors of one decoder layer. Weights are kept as transposed views [in, out] so that each
    projection is a single ``mm``/``addmm`` on [T, in] rows, with no per-step transpose op."""

    attn_norm: Tensor  # [hidden]
    qkv_t: Weight  # [hidden, (H + 2 * KV) * D]
    qkv_b: Tensor | None
    q_norm: Tensor | None  # [D], Qwen3 only
    k_norm: Tensor | None
    o_t: Weight  # [H * D, hidden]
    o_b: Tensor | None
    mlp_norm: Tensor  # [hidden]
    gate_up_t: Weight  # [hidden, 2 * intermediate]
    gate_up_b: Tensor | None
    down_t: Weight  # [intermediate, hidden]
    down_b: Tensor | None

    @classmethod
    def take(cls, layer: Any, norm: RMSNorm, head_norm: RMSNorm) -> LayerWeights:
        """The layer's float weights, fused and laid out for ``mm``; the HF modules are re-pointed at them."""
        attn, mlp = layer.self_attn, layer.mlp
        qkv, gate_up = attn_linears(layer), (mlp.gate_proj, mlp.up_proj)
        qkv_w, qkv_b = fuse(qkv)
        gate_up_w, gate_up_b = fuse(gate_up)
        return cls(
            attn_norm=norm.prepare(layer.input_layernorm.weight), qkv_t=split_k(to_layout(qkv_w, qkv)),
            qkv_b=qkv_b, **_head_norms(attn, head_norm),
            o_t=split_k(to_layout(attn.o_proj.weight, (attn.o_proj,))), o_b=detached(attn.o_proj.bias),
            mlp_norm=norm.prepare(layer.post_attention_layernorm.weight),
            gate_up_t=split_k(to_layout(gate_up_w, gate_up)), gate_up_b=gate_up_b,
            down_t=split_k(to_layout(mlp.down_proj.weight, (mlp.down_proj,))),
            down_b=detached(mlp.down_proj.bias),
        )

    @classmethod
    def take_int8(cls, layer: Any, norm: RMSNorm, head_norm: RMSNorm, ranges: LayerRanges) -> LayerWeights:
        """int8 copies of the layer's projections, smoothed with the calibrated input ranges (see smooth.py).

        Scales fold into what precedes each projection: the input norm (q/k/v), up_proj's rows (down_proj), the
        post-attention norm (gate/up, computed after up_proj's rows moved). The HF model's weights are untouched."""
        attn, mlp = layer.self_attn, layer.mlp
        qkv_w, qkv_b = _float(*stack(attn_linears(layer)))
        gate_up_w, gate_up_b = _float(*stack((mlp.gate_proj, mlp.up_proj)))
        down_w = mlp.down_proj.weight.detach().float()
        s_down = smoothing_scales(ranges.down_in, down_w)
        up = slice(down_w.shape[1], None)
        gate_up_w[up] /= s_down[:, None]
        if gate_up_b is not None:
            gate_up_b[up] /= s_down
        s_mlp = smoothing_scales(ranges.mlp_in, gate_up_w)
        s_attn = smoothing_scales(ranges.attn_in, qkv_w)
        return cls(
            attn_norm=norm.prepare(layer.input_layernorm.weight.detach().float() / s_attn),
            qkv_t=quantize_int8(qkv_w * s_attn), qkv_b=qkv_b, **_head_norms(attn, head_norm),
            o_t=quantize_int8(attn.o_proj.weight), o_b=detached(attn.o_proj.bias),
            mlp_norm=norm.prepare(layer.post_attention_layernorm.weight.detach().float() / s_mlp),
            gate_up_t=quantize_int8(gate_up_w * s_mlp), gate_up_b=gate_up_b,
            down_t=quantize_int8(down_w * s_down), down_b=detached(mlp.down_proj.bias),
        )


def _float(weight: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor | None]:
    """float32 for quantizing (``stack`` made new tensors, so scaling them in place leaves the model alone)."""
    return weight.float(), None if bias is None else bias.float()


def _head_norms(attn: Any, head_norm: RMSNorm) -> dict[str, Tensor | None]:
    """Qwen3's per-head q/k norms (None for the others)."""
    q_norm, k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
    return {"q_norm": None if q_norm is None else head_norm.prepare(q_norm.weight),
            "k_norm": None if k_norm is None else head_norm.prepare(k_norm.weight)}


def mm(x: Tensor, weight_t: Weight, bias: Tensor | None) -> Tensor:
    """x @ weight_t (+ bias): [T, in] -> [T, out]."""
    if isinstance(weight_t, Int8Weight | SplitKWeight):
        out = weight_t.matmul(x)
        return out if bias is None else out.add_(bias)
    return torch.mm(x, weight_t) if bias is None else torch.addmm(bias, x, weight_t)


def residual_mm(residual: Tensor, x: Tensor, weight_t: Weight, bias: Tensor | None) -> Tensor:
    """residual + x @ weight_t (+ bias), the add folded into the matmul when there is no bias."""
    if isinstance(weight_t, Int8Weight | SplitKWeight):
        return mm(x, weight_t, bias).add_(residual)
    out = torch.addmm(residual, x, weight_t)
    return out if bias is None else out.add_(bias)


class RMSNorm:
    """RMSNorm in the fewest ops (per-op overhead dominates small models on a CPU).

    In float32: x * w / rms(x) == x * (w * sqrt(n)) / hypot(||x||, sqrt(n * eps)) -- four ops instead of the
    eight of ``F.rms_norm``'s CPU decomposition, same result to rounding. Lower precisions keep ``F.rms_norm``,
    which squares and sums in float32.
    """

    def __init__(self, size: int, eps: float, dtype: torch.dtype, device: torch.device) -> None:
        self.size, self.eps = size, eps
        self.fast = dtype == torch.float32
        self._floor = torch.tensor((size * eps) ** 0.5, dtype=dtype, device=device)

    def prepare(self, weight: Tensor) -> Tensor:
        """The weight as __call__ wants it (a scaled copy in float32: norm weights are tiny)."""
        return weight.detach() * self.size**0.5 if self.fast else weight.detach()

    def __call__(self, x: Tensor, weight: Tensor) -> Tensor:
        if self.fast:
            norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True).hypot_(self._floor)
            return torch.div(x, norm).mul_(weight)
        return F.rms_norm(x, (self.size,), weight, self.eps)
