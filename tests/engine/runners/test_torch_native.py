"""The PyTorch runners against the Hugging Face forward, on tiny random models built here (no download)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
)

from qwen_stream.engine.runners.base import ModelRunner, SeqChunk
from qwen_stream.engine.runners.quantize import quantize_int8
from qwen_stream.engine.runners.torch_hf import HFRunner
from qwen_stream.engine.runners.torch_native import build_torch_runner
from tests.support.tiny_models import SMALL, VOCAB, gpt2, llama_linear_rope, llama_tied, qwen2, qwen3, randomize, tokens

ATOL, RTOL = 2e-5, 1e-4

NATIVE = [qwen2, llama_tied, qwen3, llama_linear_rope]


def reference(model: nn.Module, ids: list[int]) -> Tensor:
    """HF logits for every position of one sequence, no cache: [len, vocab]."""
    with torch.inference_mode():
        return model(torch.tensor([ids])).logits[0].float()


def close(a: Tensor, b: Tensor) -> bool:
    return torch.allclose(a, b, atol=ATOL, rtol=RTOL)


def runner_for(make: Callable[[], PreTrainedModel], max_slots: int = 8, max_seq_len: int = 64) -> tuple[nn.Module, ModelRunner]:
    model = make()
    return model, build_torch_runner(model, max_slots=max_slots, max_seq_len=max_seq_len)


def feed(runner: ModelRunner, slot: int, ids: list[int], prefill: int) -> list[Tensor]:
    """Prefill ids[:prefill], then decode the rest one by one; the logits after each step."""
    out = [runner.forward([SeqChunk(slot, ids[:prefill], 0)])[0]]
    for pos in range(prefill, len(ids)):
        out.append(runner.forward([SeqChunk(slot, [ids[pos]], pos)])[0])
    return out


@pytest.mark.parametrize("make", NATIVE)
def test_native_prefill_and_decode_match_hf(make: Callable[[], PreTrainedModel]) -> None:
    model, runner = runner_for(make)
    assert runner.name == "torch-native"
    assert isinstance(runner, ModelRunner)
    ids = tokens(14, seed=10)
    ref = reference(model, ids)
    got = feed(runner, slot=3, ids=ids, prefill=9)
    assert got[0].dtype == torch.float32 and got[0].shape == (VOCAB,)
    for step, logits in enumerate(got):
        assert close(logits, ref[8 + step]), f"step {step}: max diff {(logits - ref[8 + step]).abs().max()}"


@pytest.mark.parametrize("make", NATIVE)
def test_chunked_prefill_equals_one_shot(make: Callable[[], PreTrainedModel]) -> None:
    model, runner = runner_for(make)
    ids = tokens(20, seed=11)
    first = runner.forward([SeqChunk(0, ids[:7], 0, want_logits=False)])
    assert first.shape == (0, VOCAB)
    second = runner.forward([SeqChunk(0, ids[7:], 7)])
    assert close(second[0], reference(model, ids)[-1])


@pytest.mark.parametrize("slots", [[0, 1, 2], [5, 3, 4], [4, 1, 2], [0, 7, 3], [6, 1, 7]])
def test_batched_decode_at_different_positions_equals_alone(slots: list[int]) -> None:
    """Covers the cache paths: a window that is the batch, a permuted window, a window with an idle slot
    inside (slot 3 of [4, 1, 2]), and gathered slots."""
    model, batched = runner_for(qwen2)
    seqs = [tokens(n, seed=20 + n) for n in (5, 11, 8)]
    refs = [reference(model, s) for s in seqs]
    for slot, seq in zip(slots, seqs, strict=True):
        batched.forward([SeqChunk(slot, seq[:-3], 0, want_logits=False)])
    for back in (3, 2, 1):  # three steps, each sequence at its own position
        chunks = [SeqChunk(slot, [seq[-back]], len(seq) - back) for slot, seq in zip(slots, seqs, strict=True)]
        out = batched.forward(chunks)
        assert out.shape == (3, VOCAB)
        for row, ref in enumerate(refs):
            assert close(out[row], ref[len(seqs[row]) - back]), f"row {row}, {back} from the end"


def test_mixed_prefill_and_decodes_keep_chunk_order() -> None:
    model, runner = runner_for(llama_tied)
    a, b, c = tokens(9, seed=30), tokens(6, seed=31), tokens(12, seed=32)
    runner.forward([SeqChunk(0, a[:-1], 0), SeqChunk(2, c[:-1], 0)])
    out = runner.forward([
        SeqChunk(2, [c[-1]], len(c) - 1),
        SeqChunk(1, b, 0),  # a prefill in the middle of two decodes
        SeqChunk(0, [a[-1]], len(a) - 1, want_logits=False),
    ])
    assert out.shape == (2, VOCAB)
    assert close(out[0], reference(model, c)[-1])
    assert close(out[1], reference(model, b)[-1])


def test_free_slot_then_reuse_equals_fresh_runner() -> None:
    _, runner = runner_for(qwen3, max_slots=2)
    feed(runner, slot=1, ids=tokens(30, seed=40), prefill=25)  # leaves a longer stale tail behind
    runner.free_slot(1)
    ids = tokens(10, seed=41)
    reused = feed(runner, slot=1, ids=ids, prefill=6)
    fresh = feed(build_torch_runner(qwen3(), max_slots=2, max_seq_len=64), slot=1, ids=ids, prefill=6)
    assert all(torch.equal(a, b) for a, b in zip(reused, fresh, strict=True))


def test_fallback_runner_for_other_architectures_matches_hf(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="qwen_stream.engine.runners.torch_native"):
        model, runner = runner_for(gpt2)
    assert runner.name == "torch-hf"
    assert "gpt2" in caplog.text
    a, b = tokens(10, seed=50), tokens(7, seed=51)
    ref_a, ref_b = reference(model, a), reference(model, b)
    got = runner.forward([SeqChunk(0, a[:4], 0, want_logits=False), SeqChunk(1, b[:5], 0)])
    assert got.shape == (1, VOCAB) and close(got[0], ref_b[4])
    got = runner.forward([SeqChunk(0, a[4:8], 4), SeqChunk(1, [b[5]], 5)])
    assert close(got[0], ref_a[7]) and close(got[1], ref_b[5])
    runner.free_slot(0)
    assert close(runner.forward([SeqChunk(0, b, 0)])[0], ref_b[-1])


def test_dynamic_rope_matches_hf_incremental_forward() -> None:
    """Length-dependent RoPE is recomputed per step, as transformers does with its own cache."""
    rope = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    config = LlamaConfig(**{**SMALL, "max_position_embeddings": 8}, rope_parameters=rope)
    native = build_torch_runner(randomize(LlamaForCausalLM(config), 6), max_slots=1, max_seq_len=32)
    reference_runner = HFRunner(randomize(LlamaForCausalLM(config), 6), max_slots=1, max_seq_len=32)
    ids = tokens(14, seed=60)
    for a, b in zip(feed(native, 0, ids, 5), feed(reference_runner, 0, ids, 5), strict=True):
        assert close(a, b)


def test_bfloat16_runs_and_agrees_roughly() -> None:
    ids = tokens(12, seed=70)
    exact = reference(qwen2(), ids)[-1]
    model = qwen2()
    runner = build_torch_runner(model, max_slots=2, max_seq_len=32, dtype="bfloat16")
    assert model.lm_head.weight.dtype == torch.bfloat16
    out = feed(runner, 0, ids, 8)[-1]
    assert out.dtype == torch.float32
    assert torch.allclose(out, exact, atol=0.1)
    assert torch.corrcoef(torch.stack([out, exact]))[0, 1] > 0.99


@pytest.mark.parametrize("make", [qwen2, llama_tied])
def test_native_runner_shares_weights_with_the_hf_model(make: Callable[[], PreTrainedModel]) -> None:
    model = make()
    tied = model.config.tie_word_embeddings
    before = reference(model, tokens(6, seed=80))
    build_torch_runner(model, max_slots=1, max_seq_len=16)
    attn = model.model.layers[0].self_attn
    # q/k/v now live in one fused tensor; the HF model reads the very same memory and still agrees (to rounding:
    # in float32 the runner stores it as [in, out], so the HF matmul reads it through a transposed view).
    assert attn.q_proj.weight.untyped_storage().data_ptr() == attn.k_proj.weight.untyped_storage().data_ptr()
    lm_head, embed = model.lm_head.weight.untyped_storage(), model.model.embed_tokens.weight.untyped_storage()
    assert (lm_head.data_ptr() == embed.data_ptr()) == tied
    assert torch.allclose(reference(model, tokens(6, seed=80)), before, atol=1e-5)


@pytest.mark.parametrize("make", [qwen2, gpt2])
def test_bad_input_raises_value_error(make: Callable[[], PreTrainedModel]) -> None:
    _, runner = runner_for(make, max_slots=2, max_seq_len=16)
    with pytest.raises(ValueError, match="out of range"):
        runner.forward([SeqChunk(2, [1], 0)])
    with pytest.raises(ValueError, match="out of range"):
        runner.forward([SeqChunk(-1, [1], 0)])
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        runner.forward([SeqChunk(0, list(range(17)), 0)])
    with pytest.raises(ValueError, match="gap"):
        runner.forward([SeqChunk(0, [1, 2], 3)])
    with pytest.raises(ValueError, match="twice"):
        runner.forward([SeqChunk(0, [1], 0), SeqChunk(0, [2], 1)])
    with pytest.raises(ValueError, match="token id"):
        runner.forward([SeqChunk(0, [VOCAB + 5], 0)])
    with pytest.raises(ValueError, match="no tokens"):
        runner.forward([SeqChunk(0, [], 0)])
    with pytest.raises(ValueError, match="out of range"):
        runner.free_slot(5)
    runner.forward([SeqChunk(0, list(range(16)), 0)])  # exactly full is fine
    with pytest.raises(ValueError, match="exceeds max_seq_len"):
        runner.forward([SeqChunk(0, [1], 16)])
    runner.close()
    runner.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        runner.forward([SeqChunk(1, [1], 0)])


def test_build_validates_arguments() -> None:
    with pytest.raises(ValueError, match="max_slots"):
        build_torch_runner(qwen2(), max_slots=0, max_seq_len=16)
    with pytest.raises(ValueError, match="dtype"):
        build_torch_runner(qwen2(), max_slots=1, max_seq_len=16, dtype="int3")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            build_torch_runner(qwen2(), max_slots=1, max_seq_len=16, device="cuda")
        assert build_torch_runner(qwen2(), max_slots=1, max_seq_len=16, device="auto").name == "torch-native"


def test_int8_weights_stay_close_alone_and_in_a_batch() -> None:
    ids = tokens(12, seed=90)
    exact = reference(qwen2(), ids)[-1]
    runner = build_torch_runner(qwen2(), max_slots=4, max_seq_len=32, quantize="int8")
    assert getattr(runner, "quantize", None) == "int8"
    alone = feed(runner, 0, ids, 8)[-1]
    assert torch.corrcoef(torch.stack([alone, exact]))[0, 1] > 0.99
    other = tokens(5, seed=91)
    runner.forward([SeqChunk(2, ids[:-1], 0, want_logits=False), SeqChunk(1, other, 0)])
    both = runner.forward([SeqChunk(2, [ids[-1]], len(ids) - 1), SeqChunk(1, [7], len(other))])
    # the activation scale is shared by a call's rows, so batching moves the numbers a little, not the meaning
    assert torch.corrcoef(torch.stack([both[0], exact]))[0, 1] > 0.99


def test_int8_needs_float32_on_cpu_and_known_modes() -> None:
    with pytest.raises(ValueError, match="float32"):
        build_torch_runner(qwen2(), max_slots=1, max_seq_len=16, dtype="bfloat16", quantize="int8")
    with pytest.raises(ValueError, match="quantize"):
        build_torch_runner(qwen2(), max_slots=1, max_seq_len=16, quantize="int3")
    with pytest.raises(ValueError, match="2-D"):
        quantize_int8(torch.randn(4, 4, 4))


def test_quantize_int8_round_trip() -> None:
    weight = torch.randn(48, 64)
    weight[3] = 0.0  # an all-zero row must stay finite
    packed = quantize_int8(weight)
    assert (packed.out_features, packed.in_features) == (48, 64)
    restored = packed.dequantize()
    assert restored.shape == weight.shape and torch.isfinite(restored).all()
    # one scale per row: every weight within half a step of its row's grid
    assert ((restored - weight).abs() <= weight.abs().amax(dim=1, keepdim=True) / 127 / 2 + 1e-6).all()
    x = torch.randn(5, 64)
    assert torch.corrcoef(torch.stack([packed.matmul(x).flatten(), (x @ weight.t()).flatten()]))[0, 1] > 0.999


@pytest.mark.parametrize("rows", [1, 4, 16, 17])
@pytest.mark.parametrize("parts", [2, 4])
def test_split_k_weight_equals_one_matmul(rows: int, parts: int) -> None:
    from qwen_stream.engine.runners.torch_layers import SplitKWeight, mm, residual_mm

    gen = torch.Generator().manual_seed(rows * parts)
    weight_t, x = torch.randn(96, 40, generator=gen), torch.randn(rows, 96, generator=gen)
    bias, residual = torch.randn(40, generator=gen), torch.randn(rows, 40, generator=gen)
    split = SplitKWeight(weight_t, parts)
    assert split.blocks.untyped_storage().data_ptr() == weight_t.untyped_storage().data_ptr()  # no second copy
    torch.testing.assert_close(mm(x, split, bias), x @ weight_t + bias)
    torch.testing.assert_close(residual_mm(residual, x, split, None), residual + x @ weight_t)


def test_split_k_applies_to_float32_cpu_weights_that_divide() -> None:
    from qwen_stream.engine.runners.torch_layers import SplitKWeight, split_k

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert isinstance(split_k(torch.zeros(8, 4)), SplitKWeight)
        assert not isinstance(split_k(torch.zeros(8, 4, dtype=torch.bfloat16)), SplitKWeight)
        assert not isinstance(split_k(torch.zeros(7, 4)), SplitKWeight)  # 7 rows do not split in two
        assert not isinstance(split_k(torch.zeros(4, 8).t()), SplitKWeight)  # a view: blocks would copy
        torch.set_num_threads(1)
        assert not isinstance(split_k(torch.zeros(8, 4)), SplitKWeight)
    finally:
        torch.set_num_threads(threads)
