"""Weight-only int8 for the native runner's projections.

Symmetric, per output channel (one scale per row; a per-tensor scale ruins small models), multiplied with
PyTorch's own ``_weight_int8pack_mm`` kernel. On this CPU it only pays with bfloat16 activations: with float32
activations the kernel is several times slower than a float32 matmul, so the runner refuses that pairing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(slots=True, frozen=True)
class Int8Weight:
    """A projection's weight as int8 rows and their scales: weight ~= q * scales[:, None]."""

    q: Tensor  # [out, in] int8, contiguous
    scales: Tensor  # [out], in the activation dtype

    def matmul(self, x: Tensor) -> Tensor:
        """x: [T, in] -> x @ weight.T: [T, out]."""
        return torch.ops.aten._weight_int8pack_mm(x, self.q, self.scales)

    @property
    def nbytes(self) -> int:
        return self.q.numel() + self.scales.numel() * self.scales.element_size()


def int8_available() -> bool:
    """Whether this torch build has the weight-only int8 kernel."""
    return hasattr(torch.ops.aten, "_weight_int8pack_mm")


def quantize_int8(weight: Tensor, dtype: torch.dtype) -> Int8Weight:
    """Quantize a [out, in] weight; ``dtype`` is the activations' (and so the scales') dtype."""
    if weight.dim() != 2:
        raise ValueError(f"quantize_int8 takes a 2-D [out, in] weight, got shape {tuple(weight.shape)}")
    w = weight.detach().float()
    scales = w.abs().amax(dim=1).clamp_min(1e-12) / 127.0  # [out]; the clamp keeps all-zero rows finite
    q = torch.round(w / scales[:, None]).clamp_(-127, 127).to(torch.int8).contiguous()
    return Int8Weight(q, scales.to(dtype))


def dequantize(weight: Int8Weight) -> Tensor:
    """The float weight an Int8Weight stands for (for tests and error measurements): [out, in] float32."""
    return weight.q.float() * weight.scales.float()[:, None]
