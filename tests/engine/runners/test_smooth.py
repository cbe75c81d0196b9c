"""SmoothQuant-style scaling for the int8 path, with fbgemm's real int8 kernel and a tiny random model."""

from __future__ import annotations

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from qwen_stream.engine.runners.base import SeqChunk
from qwen_stream.engine.runners.quantize import quantize_int8
from qwen_stream.engine.runners.smooth import (
    CALIBRATION_TEXT,
    calibrate,
    calibration_token_ids,
    default_calibration_ids,
    smoothing_scales,
)
from qwen_stream.engine.runners.torch_native import build_torch_runner


def outlier_activations(rows: int, channels: int, seed: int) -> torch.Tensor:
    """Activations like an LLM's: most channels ~1, two channels ~60x larger."""
    x = torch.randn(rows, channels, generator=torch.Generator().manual_seed(seed))
    x[:, 3] *= 60
    x[:, 17] *= 40
    return x


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return float((approx - exact).norm() / exact.norm())


def test_smoothing_keeps_the_product_and_cuts_the_int8_error() -> None:
    weight = torch.randn(96, 64, generator=torch.Generator().manual_seed(1)) * 0.05
    x = outlier_activations(8, 64, seed=2)
    exact = x @ weight.t()
    scales = smoothing_scales(x.abs().amax(dim=0), weight)
    assert scales.shape == (64,) and bool((scales > 0).all())
    # in float the scaling changes nothing: (x / s) @ (w * s).T == x @ w.T
    assert torch.allclose((x / scales) @ (weight * scales).t(), exact, atol=1e-4)
    plain = relative_error(quantize_int8(weight).matmul(x), exact)
    smoothed = relative_error(quantize_int8(weight * scales).matmul(x / scales), exact)
    assert smoothed < plain / 2, (plain, smoothed)  # 2.8x here with per-token activation scales


def test_smoothing_scales_reject_a_mismatched_weight() -> None:
    with pytest.raises(ValueError, match="inputs"):
        smoothing_scales(torch.ones(10), torch.ones(4, 12))


def tiny_qwen2_with_outliers() -> Qwen2ForCausalLM:
    config = Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, vocab_size=500, max_position_embeddings=128, tie_word_embeddings=False)
    model = Qwen2ForCausalLM(config)
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1 + (1.0 if "norm" in name else 0.0))
        for layer in model.model.layers:  # outlier channels enter q/k/v and gate/up through the norm weights
            layer.input_layernorm.weight[[5, 40]] *= 50
            layer.post_attention_layernorm.weight[[9]] *= 50
    return model.eval()


def test_calibrate_records_every_projection_input() -> None:
    model = tiny_qwen2_with_outliers()
    ranges = calibrate(model, list(range(40)))
    assert len(ranges.layers) == 2 and ranges.head_in.shape == (64,)
    first = ranges.layers[0]
    assert first.attn_in.shape == (64,) and first.mlp_in.shape == (64,) and first.down_in.shape == (128,)
    assert int(first.attn_in.argmax()) in (5, 40)  # the planted outliers are what calibration sees
    with pytest.raises(ValueError, match="at least one token"):
        calibrate(model, [])


def test_int8_runner_with_smoothing_tracks_float32_on_outliers() -> None:
    ids = torch.randint(0, 500, (24,), generator=torch.Generator().manual_seed(7)).tolist()
    exact_model = tiny_qwen2_with_outliers()
    with torch.inference_mode():
        exact = exact_model(torch.tensor([ids])).logits[0, -1]
    runner = build_torch_runner(tiny_qwen2_with_outliers(), max_slots=2, max_seq_len=64, quantize="int8",
                                calibration_ids=list(range(100)))
    got = runner.forward([SeqChunk(0, ids, 0)])[0]
    assert torch.corrcoef(torch.stack([got, exact]))[0, 1] > 0.995


def test_calibration_ids_from_a_real_tokenizer(qwen_tokenizer: object) -> None:
    ids = calibration_token_ids(qwen_tokenizer)
    assert 100 < len(ids) < 1024
    assert 151644 in ids  # <|im_start|>: a tokenizer that knows the chat markers encodes them as such
    assert "请给我讲一个有趣的故事" in CALIBRATION_TEXT
    sample = default_calibration_ids(1000)
    assert sample == default_calibration_ids(1000) and all(0 <= i < 1000 for i in sample)
