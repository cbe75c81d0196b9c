"""The fallback runner ("torch-hf"): the Hugging Face model's own forward, one chunk at a time.

For architectures the native runner does not know. Each slot holds its own transformers ``DynamicCache``;
sequences are not batched together, so it is correct but slower under many concurrent streams.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from transformers import DynamicCache

from qwen_stream.engine.runners.base import SeqChunk
from qwen_stream.engine.runners.kv_cache import SlotTable


class HFRunner:
    """Runs ``hf_model(input_ids, past_key_values=...)`` per chunk with a per-slot cache."""

    name = "torch-hf"
    can_rewind = False  # a transformers cache only grows or restarts

    def __init__(self, hf_model: nn.Module, *, max_slots: int, max_seq_len: int) -> None:
        # A transformers cache can only grow or restart, so a chunk may not rewind into a slot's past.
        self._table = SlotTable(max_slots, max_seq_len, allow_rewind=False)
        self.max_slots, self.max_seq_len = max_slots, max_seq_len
        model: Any = hf_model  # HF attributes are dynamic
        self._model = model
        self._config = model.config
        out = model.get_output_embeddings()
        self.vocab_size = int(out.weight.shape[0]) if out is not None else int(self._config.vocab_size)
        self._vocab_rows = int(model.get_input_embeddings().weight.shape[0])
        self._device = next(hf_model.parameters()).device
        self._caches: list[DynamicCache | None] = [None] * max_slots
        self._closed = False
        # transformers 5.x renames the forward's `past_key_values` to `cache`; use whichever this version takes.
        params = inspect.signature(hf_model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in params else "past_key_values"

    def forward(self, chunks: Sequence[SeqChunk]) -> Tensor:
        if self._closed:
            raise RuntimeError("this runner is closed")
        self._table.check(chunks, self._vocab_rows)
        rows: list[Tensor] = []
        with torch.inference_mode():
            for chunk in chunks:
                logits = self._run(chunk)  # [vocab]
                self._table.advance(chunk)
                if chunk.want_logits:
                    rows.append(logits)
        if not rows:
            return torch.empty((0, self.vocab_size), dtype=torch.float32, device=self._device)
        return torch.stack(rows).float()

    def _run(self, chunk: SeqChunk) -> Tensor:
        cache = self._caches[chunk.slot]
        if cache is None or chunk.start_pos == 0:
            cache = self._caches[chunk.slot] = _new_cache(self._config)
        end = chunk.start_pos + len(chunk.token_ids)
        ids = torch.tensor([chunk.token_ids], device=self._device)  # [1, S]
        positions = torch.arange(chunk.start_pos, end, device=self._device)[None]  # [1, S]
        # The cache object grows in place, so the slot keeps pointing at it.
        kwargs = {self._cache_kwarg: cache}
        out = self._model(input_ids=ids, position_ids=positions, use_cache=True, logits_to_keep=1, **kwargs)
        return out.logits[0, -1]

    def free_slot(self, slot: int) -> None:
        self._table.free(slot)
        self._caches[slot] = None

    def close(self) -> None:
        self._caches = [None] * self.max_slots
        self._closed = True


def _new_cache(config: Any) -> DynamicCache:
    try:
        return DynamicCache(config=config)  # knows the model's layer types (sliding windows) when given
    except TypeError:  # older transformers
        return DynamicCache()
