"""The tensors of the native PyTorch runner's decoder layers and the few fused ops it runs them with.

Kept apart from the runner's step logic (torch_runner.py): these functions decide how weights are laid out
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

from qwen_stream.engine.quantize import Int8Weight, quantize_int8


def attn_linears(layer: Any) -> tuple[nn.Linear, nn.Linear, nn.Linear]:
    attn = layer.self_attn
    return attn.q_proj, attn.k_proj, attn.v_proj


def fuse(linears: Sequence[nn.Linear]) -> tuple[Tensor, Tensor | None]:
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


Weight = Tensor | Int8Weight  # a transposed float weight view [in, out], or int8 rows [out, in] with scales


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
    def take(cls, layer: Any, norm: RMSNorm, head_norm: RMSNorm, int8: bool) -> LayerWeights:
        attn, mlp = layer.self_attn, layer.mlp
        qkv_w, qkv_b = fuse(attn_linears(layer))
        gate_up_w, gate_up_b = fuse((mlp.gate_proj, mlp.up_proj))
        q_norm, k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)

        def prep(weight: Tensor) -> Weight:
            return quantize_int8(weight, weight.dtype) if int8 else weight.detach().t()

        return cls(
            attn_norm=norm.prepare(layer.input_layernorm.weight), qkv_t=prep(qkv_w), qkv_b=qkv_b,
            q_norm=None if q_norm is None else head_norm.prepare(q_norm.weight),
            k_norm=None if k_norm is None else head_norm.prepare(k_norm.weight),
            o_t=prep(attn.o_proj.weight), o_b=detached(attn.o_proj.bias),
            mlp_norm=norm.prepare(layer.post_attention_layernorm.weight),
            gate_up_t=prep(gate_up_w), gate_up_b=gate_up_b,
            down_t=prep(mlp.down_proj.weight), down_b=detached(mlp.down_proj.bias),
        )


def mm(x: Tensor, weight_t: Weight, bias: Tensor | None) -> Tensor:
    """x @ weight_t (+ bias): [T, in] -> [T, out]."""
    if isinstance(weight_t, Int8Weight):
        out = weight_t.matmul(x)
        return out if bias is None else out.add_(bias)
    return torch.mm(x, weight_t) if bias is None else torch.addmm(bias, x, weight_t)


def residual_mm(residual: Tensor, x: Tensor, weight_t: Weight, bias: Tensor | None) -> Tensor:
    """residual + x @ weight_t (+ bias), the add folded into the matmul when there is no bias."""
    if isinstance(weight_t, Int8Weight):
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
