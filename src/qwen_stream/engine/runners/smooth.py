"""SmoothQuant-style scaling for the int8 path: move activation outliers into the weights before quantizing.

int8 projections quantize their input on the fly with one scale per row (see quantize.py). A few input channels of
an LLM carry values ~100x the rest, so one scale per row leaves the other channels a handful of levels: on
SmolLM2-135M the top-1 token agreed with float32 at only 72% of positions. Dividing each input channel j by
``s_j = max|x_j|**a / max|w_j|**(1 - a)`` and multiplying the weight's column j by the same ``s_j`` computes the same
product while flattening the activations (Xiao et al., SmoothQuant, 2022). The division is folded where it costs
nothing at run time: into the RMSNorm weight before q/k/v and gate/up, into the rows of up_proj before down_proj,
and into the final norm before the lm_head.

``max|x_j|`` comes from one float32 forward of the HF model over a short calibration text (``calibrate``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

ALPHA = 0.7  # how much of the outliers moves into the weights; SmoothQuant's default
# Mixed prose, dialogue, Chinese, code and numbers: outlier channels show up on any text, but a calibration that
# never saw CJK or code would under-estimate some channels' range.
CALIBRATION_TEXT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
    "Explain how a lighthouse works, then write a Python function that adds two numbers.<|im_end|>\n"
    "<|im_start|>assistant\nA lighthouse is a tower with a bright lamp and a Fresnel lens at the top. "
    "Ships see the beam from 20 to 30 nautical miles away, and each light flashes in its own pattern.\n\n"
    "```python\ndef add(a: int, b: int) -> int:\n    return a + b\n```\n"
    "请给我讲一个有趣的故事。从前有一座山，山里有一座庙，庙里有一个老和尚在给小和尚讲故事。\n"
    "Q: What is 12 * 7? A: 84. {\"name\": \"qwen\", \"tokens\": [1, 2, 3]} 🤖 Done!<|im_end|>\n"
)


@dataclass(slots=True)
class LayerRanges:
    """max |x| per input channel of one decoder layer's projections, over the calibration tokens."""

    attn_in: Tensor  # [hidden]: input of q/k/v (after the input RMSNorm)
    mlp_in: Tensor  # [hidden]: input of gate/up (after the post-attention RMSNorm)
    down_in: Tensor  # [intermediate]: input of down_proj (silu(gate) * up)


@dataclass(slots=True)
class ModelRanges:
    layers: list[LayerRanges]
    head_in: Tensor  # [hidden]: input of the lm_head (after the final norm)


def calibrate(hf_model: nn.Module, token_ids: Sequence[int]) -> ModelRanges:
    """One forward of the (float) HF model over ``token_ids``, recording each projection input's channel maxima."""
    if len(token_ids) == 0:
        raise ValueError("calibration needs at least one token")
    model: Any = hf_model
    seen: dict[nn.Module, Tensor] = {}

    def record(module: nn.Module, inputs: tuple[Tensor, ...]) -> None:
        peak = inputs[0].detach().abs().float().reshape(-1, inputs[0].shape[-1]).amax(dim=0)
        seen[module] = peak if module not in seen else torch.maximum(seen[module], peak)

    watched = [model.lm_head]
    for layer in model.model.layers:
        watched += [layer.self_attn.q_proj, layer.mlp.gate_proj, layer.mlp.down_proj]
    hooks = [m.register_forward_pre_hook(record) for m in watched]
    try:
        with torch.inference_mode():
            ids = torch.tensor([list(token_ids)], device=model.lm_head.weight.device)
            model(input_ids=ids, use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    layers = [LayerRanges(seen[layer.self_attn.q_proj], seen[layer.mlp.gate_proj], seen[layer.mlp.down_proj])
              for layer in model.model.layers]
    return ModelRanges(layers, seen[model.lm_head])


def smoothing_scales(act_max: Tensor, weight: Tensor, alpha: float = ALPHA) -> Tensor:
    """s_j for a projection with weight [out, in] whose input channels peak at ``act_max`` [in]."""
    if act_max.shape != weight.shape[1:]:
        raise ValueError(f"act_max has shape {tuple(act_max.shape)}, the weight takes {weight.shape[1]} inputs")
    weight_max = weight.detach().abs().float().amax(dim=0)
    scales = act_max.float().clamp_min(1e-5) ** alpha / weight_max.clamp_min(1e-5) ** (1 - alpha)
    return scales.clamp_min(1e-5)


def default_calibration_ids(vocab_rows: int, count: int = 256) -> list[int]:
    """Token ids to calibrate with when no tokenizer is at hand (a fixed pseudo-random sample of the vocabulary).

    Real text is better (``calibration_token_ids``); outlier channels are a property of the weights, so any tokens
    reveal most of them."""
    generator = torch.Generator().manual_seed(0)
    return torch.randint(0, vocab_rows, (count,), generator=generator).tolist()


def calibration_token_ids(tokenizer: Any) -> list[int]:
    """CALIBRATION_TEXT as the model's tokenizer encodes it (special tokens it does not know stay plain text)."""
    return list(tokenizer(CALIBRATION_TEXT, add_special_tokens=False)["input_ids"])
