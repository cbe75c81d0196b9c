"""Prompt keys and values from int8 GEMMs, for a llama.cpp runner's KV cache (the fast prefill).

Decoding one stream reads the weights once per token and runs at the memory's speed: llama.cpp's Q4 kernels are
the right tool there. A prompt chunk is compute-bound instead, and llama.cpp's CPU kernels reach a fraction of what
the CPU's int8 GEMMs do (docs/performance.md has the figures per CPU). So a prompt chunk can be computed here by the
native PyTorch runner's int8 projections (fbgemm: VNNI where the CPU has it, AVX2 otherwise; quantize.py), keys and
values only (no lm_head), and handed to llama.cpp's cache (llamacpp_prefill.py), which then decodes as before.

The weights are the GGUF's own, dequantized once (models/gguf_convert.py) and requantized to int8 per output channel
with the calibrated smoothing of smooth.py: a second copy of the layers (~1.3 GB for a 1.5B model) and a float16
embedding table. The numbers differ from llama.cpp's in their low bits, so a request with a seed of its own never
takes this path (engine/sched/prefill_path.py).

Key layout: llama.cpp caches keys after RoPE in the GGUF's head layout. For the llama architecture the GGUF
converter interleaves each head's two rotary halves (llama.cpp then rotates adjacent pairs), which the Hugging Face
model undoes (it rotates halves); Qwen2 and Qwen3 GGUFs keep the halves. Keys move between the two layouts here.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from qwen_stream.engine.runners.base import SeqChunk
from qwen_stream.engine.runners.llamacpp_kv import SeqKV
from qwen_stream.engine.runners.torch_native import NativeRunner, native_unsupported_reason

logger = logging.getLogger(__name__)

# model_type -> whether its GGUF interleaves each key head's rotary halves (convert_hf_to_gguf's permute)
_INTERLEAVED_KEYS = {"llama": True, "qwen2": False, "qwen3": False}


def interleave_order(head_dim: int) -> torch.Tensor:
    """Indices taking a key head in halves layout [x0..x(d/2-1), y0..] to the interleaved one [x0, y0, x1, y1...]."""
    half = head_dim // 2
    return torch.stack((torch.arange(half), torch.arange(half) + half), dim=1).reshape(-1)


class Int8Prefill:
    """Keys and values of prompt chunks from a keys-and-values-only int8 ``NativeRunner`` of one slot."""

    def __init__(self, native: NativeRunner, model_type: str, threads: int) -> None:
        if model_type not in _INTERLEAVED_KEYS:
            raise ValueError(f"no fast prefill for model_type {model_type!r} (its GGUF key layout is not known here)")
        self.native, self.threads = native, threads
        self.n_layers, (self.kv_heads, self.head_dim) = native.n_layers, native.kv_shape
        self.width = self.kv_heads * self.head_dim  # one K or V row of llama.cpp's cache
        self._to_gguf: torch.Tensor | None = None
        self._from_gguf: torch.Tensor | None = None
        if _INTERLEAVED_KEYS[model_type]:
            self._to_gguf = interleave_order(self.head_dim)
            self._from_gguf = torch.argsort(self._to_gguf)

    def kv(self, prefix: SeqKV, token_ids: Sequence[int], start: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """K and V rows (float16 [len(token_ids), width] per layer, llama.cpp's layout) for ``token_ids`` at
        positions ``start``..., attending over ``prefix`` (positions 0..start-1, read from llama.cpp's cache).
        RuntimeError if the prefix holds other positions (this chunk then goes to llama.cpp)."""
        if len(prefix.positions) != start or (start and not np.array_equal(prefix.positions, np.arange(start))):
            raise RuntimeError(f"the cached prefix does not hold exactly positions 0..{start - 1}")
        threads = torch.get_num_threads()
        torch.set_num_threads(self.threads)  # the llama.cpp runner keeps torch at one thread between its steps
        try:
            with torch.inference_mode():
                self.native.put_kv(0, [self._from_cache(k, keys=True) for k in prefix.k],
                                   [self._from_cache(v, keys=False) for v in prefix.v])
                self.native.forward([SeqChunk(0, list(token_ids), start, want_logits=False)])
                k, v = self.native.get_kv(0, start, start + len(token_ids))
                return [self._to_cache(x, keys=True) for x in k], [self._to_cache(x, keys=False) for x in v]
        finally:
            torch.set_num_threads(threads)

    def _from_cache(self, rows: np.ndarray, *, keys: bool) -> torch.Tensor:
        heads = torch.from_numpy(rows).float().view(-1, self.kv_heads, self.head_dim)
        return heads[..., self._from_gguf] if keys and self._from_gguf is not None else heads

    def _to_cache(self, heads: torch.Tensor, *, keys: bool) -> np.ndarray:
        if keys and self._to_gguf is not None:
            heads = heads[..., self._to_gguf]
        return heads.reshape(-1, self.width).to(torch.float16).numpy()


def build_int8_prefill(source: Any, *, window: int, threads: int, progress: bool = False) -> Int8Prefill:
    """An ``Int8Prefill`` for a GGUF ``source`` (models.sources.ModelSource) serving ``window`` positions: its
    Hugging Face checkpoint (converted once and cached), calibrated and quantized to int8, the float weights then
    dropped. ValueError for an architecture the native runner does not run."""
    from qwen_stream.models import sources

    started = time.perf_counter()
    hf_model: Any = sources.load_hf_model(source, dtype="float32", progress=progress)
    reason = native_unsupported_reason(hf_model)
    if reason is not None:
        raise ValueError(f"no fast prefill for this model: {reason}")
    model_type = str(hf_model.config.model_type)
    native = NativeRunner(hf_model, max_slots=1, max_seq_len=window, quantize="int8", progress=progress,
                          logits=False)
    del hf_model  # the float weights: only the int8 copies and the float16 embedding table stay
    logger.info("fast prefill: int8 weights of %s ready in %.0f s", source.name, time.perf_counter() - started)
    return Int8Prefill(native, model_type, threads)
