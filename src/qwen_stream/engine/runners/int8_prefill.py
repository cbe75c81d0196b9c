"""Prompt keys and values from int8 GEMMs, for a llama.cpp runner's KV cache (the fast prefill).

Decoding one stream reads the weights once per token and runs at the memory's speed: llama.cpp's Q4 kernels are
the right tool there. A prompt chunk is compute-bound instead, and llama.cpp's CPU kernels reach a fraction of what
the CPU's int8 GEMMs do (docs/performance.md has the figures per CPU). So a prompt chunk can be computed here by the
native PyTorch runner's int8 projections (fbgemm: VNNI where the CPU has it, AVX2 otherwise; quantize.py), keys and
values only (no lm_head), and handed to llama.cpp's cache (llamacpp_prefill.py), which then decodes as before.

The weights are the GGUF's own, dequantized once (models/gguf_convert.py) and requantized to int8 per output channel
with the calibrated smoothing of smooth.py: a second copy of the layers (~1.3 GB for a 1.5B model) and a float16
embedding table. Building it holds the float32 model (~6 bytes a parameter at peak, a minute or two), so the result
is saved beside the converted checkpoint and later starts load it. The numbers differ from llama.cpp's in their low bits, so a request with a seed of its own never
takes this path (engine/sched/prefill_path.py).

Key layout: llama.cpp caches keys after RoPE in the GGUF's head layout. For the llama architecture the GGUF
converter interleaves each head's two rotary halves (llama.cpp then rotates adjacent pairs), which the Hugging Face
model undoes (it rotates halves); Qwen2 and Qwen3 GGUFs keep the halves. Keys move between the two layouts here.
"""

from __future__ import annotations

import logging
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from qwen_stream.atomic_file import atomic_output
from qwen_stream.engine.runners.base import SeqChunk
from qwen_stream.engine.runners.llamacpp_kv import SeqKV
from qwen_stream.engine.runners.torch_native import NativeRunner, native_unsupported_reason
from qwen_stream.heap import release_free_heap

logger = logging.getLogger(__name__)

# model_type -> whether its GGUF interleaves each key head's rotary halves (convert_hf_to_gguf's permute)
_INTERLEAVED_KEYS = {"llama": True, "qwen2": False, "qwen3": False}
_CACHE_FORMAT = 1  # bump when what is saved changes (Int8Prefill, NativeRunner, smoothing or quantizing)


def _key_layout_unknown(model_type: str) -> str | None:
    if model_type in _INTERLEAVED_KEYS:
        return None
    return f"model_type {model_type!r}: its GGUF key layout is not known here"


def interleave_order(head_dim: int) -> torch.Tensor:
    """Indices taking a key head in halves layout [x0..x(d/2-1), y0..] to the interleaved one [x0, y0, x1, y1...]."""
    half = head_dim // 2
    return torch.stack((torch.arange(half), torch.arange(half) + half), dim=1).reshape(-1)


class Int8Prefill:
    """Keys and values of prompt chunks from a keys-and-values-only int8 ``NativeRunner`` of one slot."""

    def __init__(self, native: NativeRunner, model_type: str, threads: int) -> None:
        reason = _key_layout_unknown(model_type)
        if reason is not None:
            raise ValueError(f"no fast prefill: {reason}")
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


def build_int8_prefill(source: Any, *, window: int, threads: int, progress: bool = False,
                       cache_dir: Path | None = None) -> Int8Prefill:
    """An ``Int8Prefill`` for a GGUF ``source`` (models.sources.ModelSource) serving positions up to ``window``.

    Built once from the Hugging Face checkpoint (converted once and cached), calibrated and quantized to int8, the
    float weights then dropped, and saved in ``cache_dir`` (default: beside the converted checkpoint); later starts
    load that file (seconds, ~1 byte a parameter) instead of building (a minute or two, ~6 bytes a parameter at
    peak). ValueError for an architecture the native runner does not run."""
    path = cached_path(source, cache_dir)
    prefill = _load(path, window, threads)
    if prefill is None:
        prefill = _build(source, window=window, threads=threads, progress=progress)
        _save(prefill, path)
    # what building or reading the file freed stays in glibc's heap otherwise: on the 1.5B, RSS +3.3 GB after
    # loading the saved copy, +2.0 GB after this
    release_free_heap()
    return prefill


def cached_path(source: Any, cache_dir: Path | None = None) -> Path:
    """Where the int8 copy of ``source``'s layers is kept: keyed by the GGUF (the conversion cache's key), this
    file's format and torch's version (fbgemm's packed weights are pickled as torch writes them)."""
    if cache_dir is None:
        from qwen_stream.models import gguf_convert, registry

        cache_dir = gguf_convert.converted_dir(Path(source.path), registry.cache_root(), source.sha256)
    return cache_dir / f"int8-prefill-v{_CACHE_FORMAT}-torch{torch.__version__}.pt"


def _build(source: Any, *, window: int, threads: int, progress: bool) -> Int8Prefill:
    from qwen_stream.models import sources

    started = time.perf_counter()
    hf_model: Any = sources.load_hf_model(source, dtype="float32", progress=progress)
    model_type = str(hf_model.config.model_type)
    reason = native_unsupported_reason(hf_model) or _key_layout_unknown(model_type)
    if reason is not None:  # before a minute of quantizing, not after
        raise ValueError(f"no fast prefill for this model: {reason}")
    native = NativeRunner(hf_model, max_slots=1, max_seq_len=window, quantize="int8", progress=progress,
                          logits=False)
    del hf_model  # the float weights: only the int8 copies and the float16 embedding table stay
    logger.info("fast prefill: int8 weights of %s built in %.0f s", source.name, time.perf_counter() - started)
    return Int8Prefill(native, model_type, threads)


def _load(path: Path, window: int, threads: int) -> Int8Prefill | None:
    """The saved copy, if there is a readable one for this window (a damaged or stale file is deleted)."""
    if not path.is_file():
        return None
    try:
        # Our own file (written by _save below, in the user's cache); pickled because fbgemm's packed weights
        # and the model's rotary module are objects, not plain tensors.
        with warnings.catch_warnings():  # torch's own deprecation notice about the quantized tensors' storage
            warnings.simplefilter("ignore", UserWarning)
            prefill = torch.load(path, weights_only=False)
        if not isinstance(prefill, Int8Prefill) or prefill.native.max_seq_len < window:
            raise ValueError("another layout or a shorter window")
    except Exception as exc:  # unreadable for any reason: build again
        logger.warning("fast prefill: %s is not usable (%s); building the int8 weights again", path, exc)
        path.unlink(missing_ok=True)
        return None
    prefill.threads = threads
    return prefill


def _save(prefill: Int8Prefill, path: Path) -> None:
    """Write atomically (atomic_file.py), so a crash mid-write leaves no half file to load. A failure (a full or
    read-only disk) costs the next start a rebuild, nothing else."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_output(path) as out:
            torch.save(prefill, out)
    except Exception as exc:
        logger.warning("fast prefill: could not save the int8 weights to %s (%s)", path, exc)
