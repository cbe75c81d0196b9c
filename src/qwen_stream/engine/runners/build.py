"""Build the runner that computes a loaded model's logits, from a model source and the runner options.

The choice is made here: llama.cpp for GGUF files on the CPU (its quantized kernels are 3-4x faster than PyTorch
here), PyTorch for Hugging Face checkpoints, GPUs, and whenever llama-cpp-python is missing; a text encoder (BERT
and kin: embedding models such as all-MiniLM-L6-v2) runs on the encoder runner, for embeddings only. The PyTorch runner is
our own forward ("torch-native") for the architectures it knows and the Hugging Face forward ("torch-hf")
otherwise; ``runner.name`` says which one runs.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qwen_stream.engine.config import EngineConfig
from qwen_stream.engine.runners.base import ModelRunner

if TYPE_CHECKING:
    from qwen_stream.engine.spec.draft_model import ModelDrafter

logger = logging.getLogger(__name__)

DEFAULT_CONTEXT_LENGTH = 4096  # served by default: longer windows cost KV memory for every slot


def build_runner(source: Any, config: EngineConfig, *, threads: int, calibration: Sequence[int] | None = None,
                 progress: bool = True) -> ModelRunner:
    """A runner for ``source`` (a models.sources.ModelSource) as ``config`` says, computing on ``threads`` threads.

    ``quantize="int8"`` runs the PyTorch runner's projections with int8 weights (see quantize.py) and picks it under
    ``runner="auto"``, since GGUF weights are quantized already; ``calibration`` is text whose activations set its
    smoothing (see smooth.py). ``kv_budget``: KV cells (tokens) shared by all slots on the llama.cpp runner (None:
    ``kv_windows`` context windows' worth); ``kv_type``: "q8_0" for an 8-bit KV cache there. The PyTorch runner's
    cache grows with the longest sequence."""
    from qwen_stream.devices import resolve_device

    runner = "torch" if config.quantize else config.runner
    resolved = str(resolve_device(config.device))
    is_gguf = source.kind == "gguf"
    if runner == "llamacpp" and not is_gguf:
        raise ValueError("the llama.cpp runner needs a .gguf model; use --runner torch for Hugging Face checkpoints")
    if not is_gguf and _is_encoder(source):
        return _encoder_runner(source, config, device=resolved)
    if is_gguf and runner in ("auto", "llamacpp") and resolved == "cpu":
        try:
            return _llamacpp_runner(source, config, threads, progress)
        except ImportError as exc:
            warnings.warn(f"llama-cpp-python is not installed ({exc}); falling back to the slower PyTorch runner. "
                          "Install it with: pip install 'qwen-stream[llama]'", RuntimeWarning, stacklevel=3)
    if config.prefill == "int8":  # the int8 prefill hands its K/V to llama.cpp's cache: nothing here takes it
        raise ValueError("--prefill int8 computes prompts for the llama.cpp runner (a GGUF model on the CPU); this "
                         "model runs on PyTorch")
    return _torch_runner(source, config, device=resolved, calibration=calibration, progress=progress)


def _llamacpp_runner(source: Any, config: EngineConfig, threads: int, progress: bool) -> ModelRunner:
    from qwen_stream.engine.runners.llamacpp import LlamaCppRunner
    from qwen_stream.engine.runners.prefill_setup import setup_fast_prefill

    # The runner caps the window at the model's training context (read from the loaded model: parsing the GGUF
    # metadata in Python would cost ~16 s on Qwen's 151k-entry vocabulary).
    window = config.context_length or DEFAULT_CONTEXT_LENGTH
    kv_budget = config.kv_budget or max(1, config.kv_windows) * window
    runner = LlamaCppRunner(Path(source.path), max_slots=config.max_batch_size, max_seq_len=window,
                            threads=threads, kv_budget=kv_budget, kv_type=config.kv_type)
    try:
        setup_fast_prefill(runner, source, config.prefill, threads=threads, progress=progress)
    except BaseException:
        runner.close()
        raise
    return runner


def _is_encoder(source: Any) -> bool:
    import json

    from qwen_stream.engine.runners.encoder import is_encoder_config

    try:
        config = json.loads((Path(source.path) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(config, dict) and is_encoder_config(config)


def _encoder_runner(source: Any, config: EngineConfig, *, device: str) -> ModelRunner:
    """An encoder's runner; its window is what the model was built for (sentence-transformers' max_seq_length)."""
    from qwen_stream.engine.runners.encoder import EncoderRunner
    from qwen_stream.models import sources
    from qwen_stream.models.embedding_style import read_folder_style

    if config.runner == "llamacpp" or config.quantize or config.prefill == "int8":
        raise ValueError("a text encoder runs on the encoder runner (transformers): --runner llamacpp, "
                         "--quantize and --prefill int8 do not apply to it")
    style = read_folder_style(Path(source.path))
    built_for = style.max_tokens if style is not None and style.max_tokens else None
    window = min(filter(None, (config.context_length, built_for))) if config.context_length or built_for else 512
    model = sources.load_hf_encoder(source, device=device)
    return EncoderRunner(model, max_slots=config.max_batch_size, max_seq_len=window)


def build_drafter(source: Any, target: ModelRunner, *, threads: int) -> ModelDrafter:
    """A draft model (``source``, a models.sources.ModelSource) for ``target``: its own llama.cpp context with the
    target's slots, window and KV pool, timed at start-up (see draft_model.py). GGUF on the llama.cpp runner only:
    the draft's slots follow the target's through the same rewind-and-refeed path, built for llama.cpp here."""
    from qwen_stream.engine.runners.llamacpp import LlamaCppRunner
    from qwen_stream.engine.spec.draft_model import ModelDrafter

    if target.name != "llamacpp" or source.kind != "gguf":
        raise ValueError(f"a draft model runs on the llama.cpp runner with GGUF files only (the model runs on "
                         f"{target.name}, the draft is a {source.kind} model)")
    # torch's threads were limited by the target's runner, which also gives them back when it closes
    runner = LlamaCppRunner(Path(source.path), max_slots=target.max_slots, max_seq_len=target.max_seq_len,
                            threads=threads, kv_budget=getattr(target, "kv_budget", None),
                            kv_type=getattr(target, "kv_type", None), limit_torch_threads=False)
    try:
        if runner.vocab_size != target.vocab_size or runner.max_seq_len < target.max_seq_len:
            raise ValueError(f"the draft model must share the model's tokenizer and window: vocabulary "
                             f"{runner.vocab_size} vs {target.vocab_size}, window {runner.max_seq_len} vs "
                             f"{target.max_seq_len}")
        return ModelDrafter(runner)
    except BaseException:
        runner.close()
        raise


def _torch_runner(source: Any, config: EngineConfig, *, device: str, calibration: Sequence[int] | None,
                  progress: bool) -> ModelRunner:
    import torch

    from qwen_stream.devices import resolve_dtype
    from qwen_stream.engine.runners.torch_native import build_torch_runner
    from qwen_stream.models import sources

    torch_dtype = resolve_dtype(config.dtype, torch.device(device))  # None: float32 on CPU, bf16/fp16 on GPU
    hf_model = sources.load_hf_model(source, dtype=torch_dtype, device=device, progress=progress)
    trained = sources.context_length(hf_model.config)
    return build_torch_runner(hf_model, max_slots=config.max_batch_size,
                              max_seq_len=serve_length(config.context_length, trained), device=device,
                              dtype=torch_dtype, quantize=config.quantize, calibration_ids=calibration,
                              progress=progress)


def serve_length(asked: int | None, trained: int | None) -> int:
    """The context window to serve: what was asked, capped at the trained window; by default at most 4096."""
    limit = trained or DEFAULT_CONTEXT_LENGTH
    if asked is None:
        return min(limit, DEFAULT_CONTEXT_LENGTH)
    if asked > limit:
        logger.warning("context_length %d is longer than the model was trained for (%d); using %d", asked, limit,
                       limit)
        return limit
    return asked
