"""Tiny random models (built here, no download) and token lists for the runner and engine tests."""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch import nn
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

VOCAB = 1000
SMALL: dict[str, Any] = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=256)


M = TypeVar("M", bound=nn.Module)


def randomize(model: M, seed: int) -> M:
    """Weights large enough that a wrong rotation, mask or bias changes the logits visibly."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.1 + (1.0 if "norm" in name else 0.0))
    return model.eval()


def qwen2() -> PreTrainedModel:  # q/k/v biases and an untied lm_head, like Qwen2.5-1.5B
    return randomize(Qwen2ForCausalLM(Qwen2Config(**SMALL, tie_word_embeddings=False)), 1)


def llama_tied() -> PreTrainedModel:  # SmolLM2: llama with tied embeddings
    return randomize(LlamaForCausalLM(LlamaConfig(**SMALL, tie_word_embeddings=True)), 2)


def qwen3() -> PreTrainedModel:  # per-head q_norm / k_norm
    return randomize(Qwen3ForCausalLM(Qwen3Config(**SMALL, head_dim=16, tie_word_embeddings=True)), 3)


def llama_linear_rope() -> PreTrainedModel:
    rope = {"rope_type": "linear", "factor": 2.0, "rope_theta": 5000.0}
    return randomize(LlamaForCausalLM(LlamaConfig(**SMALL, rope_parameters=rope)), 4)


def gpt2() -> PreTrainedModel:  # an architecture the native runner does not know
    config = GPT2Config(n_embd=64, n_layer=2, n_head=4, vocab_size=VOCAB, n_positions=256)
    return randomize(GPT2LMHeadModel(config), 5)


def tokens(n: int, seed: int) -> list[int]:
    return torch.randint(0, VOCAB, (n,), generator=torch.Generator().manual_seed(seed)).tolist()
