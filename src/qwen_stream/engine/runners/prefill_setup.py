"""Give a llama.cpp runner its fast prefill (int8_prefill.py) as ``EngineConfig.prefill`` says.

"int8": built now (blocking, with progress), and every eligible chunk takes it. "auto": for models of
``AUTO_MIN_PARAMS`` or more, built (or loaded, once saved by an earlier build: int8_prefill.py) on a background
thread while llama.cpp already serves, when the machine has the memory that takes; the engine then takes it
wherever it measures cheaper (engine/sched/prefill_path.py). Smaller models prefill fast enough on llama.cpp that a second copy of their weights is not worth its memory.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any

logger = logging.getLogger(__name__)

AUTO_MIN_PARAMS = 1_000_000_000
# Building holds the float32 model once (4 bytes a parameter) beside what is already loaded, and converting a GGUF
# the first time holds more (transformers' GGUF reader: 9 GB for the 1.5B): "auto" starts only with this much free.
_BUILD_BYTES_PER_PARAM = 6
_LOAD_BYTES_PER_PARAM = 2  # loading a saved copy: the file is read whole (~1.1 bytes a parameter), then kept


def setup_fast_prefill(runner: Any, source: Any, mode: str, *, threads: int, progress: bool) -> None:
    """Attach (or start building) the fast prefill of ``runner`` (a LlamaCppRunner) for ``source``."""
    from qwen_stream.engine.runners.quantize import int8_available

    if mode == "llamacpp":
        return
    why_not = ("this torch build lacks fbgemm's int8 kernels" if not int8_available() else
               None if runner.can_fast_prefill else "it needs the unified KV cache in float16 (no --kv-type q8_0)")
    if mode == "int8":
        if why_not:
            raise ValueError(f"--prefill int8: {why_not}")
        runner.prefill_always = runner.fast_prefill_coming = True
        runner.attach_prefill(_build(runner, source, threads, progress))
        return
    from qwen_stream.engine.runners.int8_prefill import cached_path

    saved = cached_path(source).is_file()
    skip = why_not or auto_skip_reason(runner.n_params, _available_bytes(), saved=saved)
    if skip:
        logger.info("fast prefill: not built (%s); prompts run on llama.cpp", skip)
        return
    logger.info("fast prefill: int8 weights in the background; prompts run on llama.cpp until then")
    if progress:  # both cores for a while and ~1.1 bytes a parameter more: say so where the user looks
        what = "loading the saved int8 copy" if saved else "building an int8 copy (once; a minute or two)"
        print(f"fast prefill: {what} of the layers in the background, ~{1.15 * runner.n_params / 1e9:.1f} GB more "
              "(--prefill llamacpp skips it)", file=sys.stderr, flush=True)
    runner.fast_prefill_coming = True
    threading.Thread(target=_build_later, args=(runner, source, threads), name="qwen-stream-int8-prefill",
                     daemon=True).start()


def auto_skip_reason(n_params: int, free_bytes: int | None, *, saved: bool = False) -> str | None:
    """Why ``--prefill auto`` builds no int8 copy for a model of ``n_params`` with ``free_bytes`` of memory free
    (None: unknown), or None when it builds one; ``saved``: an earlier build's copy is on disk, to be loaded."""
    if n_params < AUTO_MIN_PARAMS:
        return f"{n_params / 1e9:.2f}B parameters: llama.cpp prefills models under {AUTO_MIN_PARAMS / 1e9:.0f}B fast enough"
    needed = (_LOAD_BYTES_PER_PARAM if saved else _BUILD_BYTES_PER_PARAM) * n_params
    if free_bytes is not None and free_bytes < needed:
        return f"{free_bytes / 1e9:.1f} GB free, building needs ~{needed / 1e9:.1f} GB"
    return None


def _build(runner: Any, source: Any, threads: int, progress: bool) -> Any:
    from qwen_stream.engine.runners.int8_prefill import build_int8_prefill

    # the model's whole trained window, so that the one saved copy serves any --context-length later
    window = max(runner.max_seq_len, int(getattr(runner, "n_ctx_train", 0) or 0))
    return build_int8_prefill(source, window=window, threads=threads, progress=progress)


def _build_later(runner: Any, source: Any, threads: int) -> None:
    try:
        runner.attach_prefill(_build(runner, source, threads, False))
    except Exception as exc:  # a background convenience: llama.cpp's own prefill goes on serving
        logger.warning("fast prefill: not built (%s); prompts run on llama.cpp", exc)


def _available_bytes() -> int | None:
    """MemAvailable from /proc/meminfo (None where there is none to read)."""
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
