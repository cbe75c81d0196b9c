"""Build the runner that computes a loaded model's logits, from a model source and the runner options.

The choice is made here: llama.cpp for GGUF files on the CPU (its quantized kernels are 3-4x faster than PyTorch
here), PyTorch for Hugging Face checkpoints, GPUs, and whenever llama-cpp-python is missing. The PyTorch runner is
our own forward ("torch-native") for the architectures it knows and the Hugging Face forward ("torch-hf")
otherwise; ``runner.name`` says which one runs.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from qwen_stream.engine.runner import ModelRunner

if TYPE_CHECKING:
    from qwen_stream.engine.draft_model import ModelDrafter

logger = logging.getLogger(__name__)

DEFAULT_CONTEXT_LENGTH = 4096  # served by default: longer windows cost KV memory for every slot
RUNNERS = ("auto", "llamacpp", "torch")
QUANTIZE_MODES = (None, "int8")


def check_runner_options(runner: str, quantize: str | None, max_slots: int, context_length: int | None) -> None:
    """ValueError for options no runner accepts, before anything loads."""
    if runner not in RUNNERS:
        raise ValueError(f"runner must be one of {', '.join(RUNNERS)}, got {runner!r}")
    if quantize not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {quantize!r}")
    if quantize and runner == "llamacpp":
        raise ValueError("quantize applies to the PyTorch runner (llama.cpp runs the GGUF's own quantized weights); "
                         "use --runner torch or auto")
    if max_slots < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_slots}")
    if context_length is not None and context_length < 16:
        raise ValueError(f"context_length must be >= 16, got {context_length}")


def build_runner(source: Any, runner: str = "auto", *, device: str | None = None, dtype: str | None = None,
                 max_slots: int = 16, context_length: int | None = None, threads: int, quantize: str | None = None,
                 calibration: Sequence[int] | None = None, progress: bool = True, kv_budget: int | None = None,
                 kv_windows: int = 1, kv_type: str | None = None) -> ModelRunner:
    """A runner for ``source`` (a models.loader.ModelSource). ``quantize="int8"`` runs the PyTorch runner's
    projections with int8 weights (see quantize.py) and picks it under ``runner="auto"``, since GGUF weights are
    quantized already; ``calibration`` is text whose activations set its smoothing (see smooth.py).

    ``kv_budget``: KV cells (tokens) shared by all slots on the llama.cpp runner (None: ``kv_windows`` context
    windows' worth);
    ``kv_type``: "q8_0" for an 8-bit KV cache there. The PyTorch runner's cache grows with the longest sequence."""
    from qwen_stream.engine.devices import resolve_device

    check_runner_options(runner, quantize, max_slots, context_length)
    runner = "torch" if quantize else runner
    resolved = str(resolve_device(device))
    is_gguf = source.kind == "gguf"
    if runner == "llamacpp" and not is_gguf:
        raise ValueError("the llama.cpp runner needs a .gguf model; use --runner torch for Hugging Face checkpoints")
    if is_gguf and runner in ("auto", "llamacpp") and resolved == "cpu":
        try:
            return _llamacpp_runner(Path(source.path), max_slots, context_length, threads,
                                    kv_budget or max(1, kv_windows) * (context_length or DEFAULT_CONTEXT_LENGTH), kv_type)
        except ImportError as exc:
            warnings.warn(f"llama-cpp-python is not installed ({exc}); falling back to the slower PyTorch runner. "
                          "Install it with: pip install 'qwen-stream[llama]'", RuntimeWarning, stacklevel=3)
    return _torch_runner(source, device=resolved, dtype=dtype, max_slots=max_slots, context_length=context_length,
                         quantize=quantize, calibration=calibration, progress=progress)


def _llamacpp_runner(path: Path, max_slots: int, context_length: int | None, threads: int, kv_budget: int,
                     kv_type: str | None) -> ModelRunner:
    from qwen_stream.engine.llamacpp_runner import LlamaCppRunner

    # The runner caps the window at the model's training context (read from the loaded model: parsing the GGUF
    # metadata in Python would cost ~16 s on Qwen's 151k-entry vocabulary).
    window = context_length or DEFAULT_CONTEXT_LENGTH
    return LlamaCppRunner(path, max_slots=max_slots, max_seq_len=window, threads=threads,
                          kv_budget=kv_budget, kv_type=kv_type)


def build_drafter(source: Any, target: ModelRunner, *, threads: int) -> ModelDrafter:
    """A draft model (``source``, a models.loader.ModelSource) for ``target``: its own llama.cpp context with the
    target's slots, window and KV pool, timed at start-up (see draft_model.py). GGUF on the llama.cpp runner only:
    the draft's slots follow the target's through the same rewind-and-refeed path, built for llama.cpp here."""
    from qwen_stream.engine.draft_model import ModelDrafter
    from qwen_stream.engine.llamacpp_runner import LlamaCppRunner

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


def _torch_runner(source: Any, *, device: str, dtype: str | None, max_slots: int, context_length: int | None,
                  quantize: str | None, calibration: Sequence[int] | None, progress: bool) -> ModelRunner:
    import torch

    from qwen_stream.engine.devices import resolve_dtype
    from qwen_stream.engine.torch_runner import build_torch_runner
    from qwen_stream.models import loader

    torch_dtype = resolve_dtype(dtype, torch.device(device))  # None: float32 on CPU, bf16/fp16 on GPU
    hf_model = loader.load_hf_model(source, dtype=torch_dtype, device=device, progress=progress)
    trained = loader.context_length(hf_model.config)
    return build_torch_runner(hf_model, max_slots=max_slots, max_seq_len=serve_length(context_length, trained),
                              device=device, dtype=torch_dtype, quantize=quantize, calibration_ids=calibration,
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
