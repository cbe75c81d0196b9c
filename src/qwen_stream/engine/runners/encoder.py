"""The encoder runner ("encoder"): BERT-family embedding models (sentence-transformers' all-MiniLM-L6-v2 and its
kin) through transformers' own model, for embeddings only.

An encoder attends both ways, so a prompt cannot be split over steps (``whole_prompts``: the scheduler feeds each in
one chunk) and nothing is cached between steps: a step pads its inputs into one [batch, longest] forward with an
attention mask, exactly as sentence-transformers' ``encode`` batches them. It has no language-model head:
generation and scores are refused at submit (``can_generate`` False), and ``forward`` serves no logits.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from qwen_stream.engine.runners.base import SeqChunk

# transformers model types that are bidirectional encoders of text (their AutoModel gives last_hidden_state)
ENCODER_MODEL_TYPES = frozenset({"bert", "roberta", "xlm-roberta", "distilbert", "mpnet", "electra", "camembert"})


class EncoderRunner:
    """``hf_model(input_ids, attention_mask)`` per step, every input whole; see the module docstring."""

    name = "encoder"
    can_generate = False
    whole_prompts = True
    can_rewind = False

    def __init__(self, hf_model: nn.Module, *, max_slots: int, max_seq_len: int) -> None:
        if max_slots < 1 or max_seq_len < 1:
            raise ValueError(f"max_slots and max_seq_len must be >= 1, got {max_slots} and {max_seq_len}")
        model: Any = hf_model  # HF attributes are dynamic
        self._model = model.eval()
        config = model.config
        self.max_slots = max_slots
        self.max_seq_len = min(max_seq_len, int(getattr(config, "max_position_embeddings", max_seq_len)))
        self.vocab_size = int(config.vocab_size)
        self.embedding_width = int(config.hidden_size)
        self._pad_id = int(getattr(config, "pad_token_id", None) or 0)
        self._device = next(hf_model.parameters()).device
        self._closed = False

    def forward(self, chunks: Sequence[SeqChunk]) -> Tensor:
        return self.forward_with_hidden(chunks)[0]

    def forward_with_hidden(self, chunks: Sequence[SeqChunk]) -> tuple[Tensor, list[Tensor]]:
        """No logits; each ``hidden`` chunk (a whole input) -> its last_hidden_state rows, float32 [len, width]."""
        if self._closed:
            raise RuntimeError("this runner is closed")
        for chunk in chunks:
            self._check(chunk)
        no_logits = torch.empty((0, self.vocab_size), dtype=torch.float32)
        inputs = [c.token_ids for c in chunks if c.hidden]
        if not inputs:
            return no_logits, []
        longest = max(len(ids) for ids in inputs)
        ids = torch.full((len(inputs), longest), self._pad_id, dtype=torch.long)
        mask = torch.zeros((len(inputs), longest), dtype=torch.long)
        for row, tokens in enumerate(inputs):
            ids[row, :len(tokens)] = torch.tensor(tokens, dtype=torch.long)
            mask[row, :len(tokens)] = 1
        with torch.inference_mode():
            out = self._model(input_ids=ids.to(self._device), attention_mask=mask.to(self._device),
                              token_type_ids=torch.zeros_like(ids, device=self._device))
        states = out.last_hidden_state.float()  # [batch, longest, width]
        return no_logits, [states[row, :len(tokens)].cpu() for row, tokens in enumerate(inputs)]

    def _check(self, chunk: SeqChunk) -> None:
        if chunk.want_logits or not chunk.hidden:
            raise ValueError("an encoder computes hidden states only: no logits, no generation")
        if chunk.start_pos != 0 or not chunk.token_ids or len(chunk.token_ids) > self.max_seq_len:
            raise ValueError(f"an encoder takes each input whole, 1 to {self.max_seq_len} tokens from position 0")
        if not 0 <= chunk.slot < self.max_slots:
            raise ValueError(f"slot {chunk.slot} out of range [0, {self.max_slots})")
        if any(not 0 <= t < self.vocab_size for t in chunk.token_ids):
            raise ValueError(f"token ids must be in [0, {self.vocab_size})")

    def free_slot(self, slot: int) -> None:
        """Nothing is cached between steps."""

    def close(self) -> None:
        self._closed = True


def is_encoder_config(config: dict[str, Any]) -> bool:
    """Whether a config.json describes a text encoder this runner serves."""
    return config.get("model_type") in ENCODER_MODEL_TYPES and not config.get("is_decoder", False)
