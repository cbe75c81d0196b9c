"""Hidden states for embeddings from each runner (``forward_with_hidden``): the native runner's are the Hugging Face
model's own last_hidden_state, chunked or whole, beside other chunks; the encoder runner's are transformers' own
for padded batches; the llama.cpp runner's are llama.cpp's own pooled embeddings (slow: a real GGUF)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from qwen_stream.engine.runners.base import SeqChunk
from qwen_stream.engine.runners.encoder import EncoderRunner
from qwen_stream.engine.runners.torch_native import NativeRunner
from tests.support.tiny_models import qwen2, qwen3, tokens


def hf_hidden(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    with torch.inference_mode():
        return model.model(input_ids=torch.tensor([ids])).last_hidden_state[0].float()  # after the last norm


@pytest.mark.parametrize("make", [qwen2, qwen3], ids=["qwen2", "qwen3"])
def test_native_hidden_states_are_the_models_own_whole_or_in_chunks(make) -> None:
    model = make()
    runner = NativeRunner(model, max_slots=3, max_seq_len=128)
    ids = tokens(40, seed=1)
    reference = hf_hidden(model, ids)
    _, (whole,) = runner.forward_with_hidden([SeqChunk(0, ids, 0, want_logits=False, hidden=True)])
    parts = [runner.forward_with_hidden([SeqChunk(1, ids[a:a + 16], a, want_logits=False, hidden=True)])[1][0]
             for a in range(0, 40, 16)]
    torch.testing.assert_close(whole, reference, rtol=0, atol=1e-4)
    torch.testing.assert_close(torch.cat(parts), reference, rtol=0, atol=1e-4)


def test_native_hidden_chunks_share_a_step_with_decodes_and_prompts() -> None:
    model = qwen2()
    runner = NativeRunner(model, max_slots=3, max_seq_len=128)
    prompt = tokens(12, seed=2)
    runner.forward([SeqChunk(0, prompt, 0)])
    alone = runner.forward([SeqChunk(0, [7], 12)]).clone()
    runner.free_slot(0)
    runner.forward([SeqChunk(0, prompt, 0)])
    ids = tokens(20, seed=3)
    logits, (states,) = runner.forward_with_hidden([SeqChunk(0, [7], 12), SeqChunk(1, ids, 0, want_logits=False,
                                                                                     hidden=True)])
    assert logits.shape[0] == 1  # the hidden chunk owns no logits row
    torch.testing.assert_close(logits, alone, rtol=0, atol=1e-4)
    torch.testing.assert_close(states, hf_hidden(model, ids), rtol=0, atol=1e-4)


def test_the_encoder_runner_pads_a_step_and_gives_each_input_its_own_states() -> None:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    bert = BertModel(BertConfig(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                intermediate_size=64, max_position_embeddings=64)).eval()
    runner = EncoderRunner(bert, max_slots=4, max_seq_len=64)
    inputs = [list(range(5, 30)), list(range(40, 47)), [101, 102]]
    _, states = runner.forward_with_hidden([SeqChunk(i, ids, 0, want_logits=False, hidden=True)
                                            for i, ids in enumerate(inputs)])
    for ids, got in zip(inputs, states, strict=True):
        with torch.inference_mode():
            alone = bert(input_ids=torch.tensor([ids])).last_hidden_state[0]
        assert got.shape == (len(ids), 32)
        torch.testing.assert_close(got, alone, rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="whole"):
        runner.forward_with_hidden([SeqChunk(0, [5, 6], 3, want_logits=False, hidden=True)])
    with pytest.raises(ValueError, match="no logits"):
        runner.forward([SeqChunk(0, [5, 6], 0)])


@pytest.mark.slow
@pytest.mark.llamacpp
@pytest.mark.parametrize("pooling", [1, 3], ids=["mean", "last"])
def test_llamacpp_hidden_states_pool_to_llama_cpps_own_embedding(gguf_path: Path, pooling: int) -> None:
    """Our per-token states, pooled by the engine's rule, against a llama.cpp context that pools itself."""
    import ctypes

    from qwen_stream.engine.pooling import Pooler
    from qwen_stream.engine.runners.llamacpp import LlamaCppRunner, import_llama_cpp
    from qwen_stream.types import PoolingParams

    ids = [1, *tokens(30, seed=4)]
    with LlamaCppRunner(gguf_path, max_slots=2, max_seq_len=128, threads=1) as runner:
        _, (states,) = runner.forward_with_hidden([SeqChunk(0, ids, 0, want_logits=False, hidden=True)])
        pooler = Pooler(PoolingParams({1: "mean", 3: "last"}[pooling], normalize=False))
        pooler.add(states, 0)
        ours = pooler.result()
        ll = import_llama_cpp()
        params = ll.llama_context_default_params()
        params.n_ctx, params.n_batch, params.n_ubatch, params.n_threads, params.n_threads_batch = 128, 64, 64, 1, 1
        params.embeddings, params.pooling_type = True, pooling
        ctx = ll.llama_init_from_model(runner._model, params)
        try:
            token_array = (ll.llama_token * len(ids))(*ids)  # kept alive while llama.cpp reads it
            batch = ll.llama_batch_get_one(token_array, len(ids))
            assert ll.llama_decode(ctx, batch) == 0
            theirs = np.ctypeslib.as_array(ctypes.cast(ll.llama_get_embeddings_seq(ctx, 0),
                                                       ctypes.POINTER(ctypes.c_float)), shape=(runner.embedding_width,))
            np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-4)
        finally:
            ll.llama_free(ctx)
