"""Turn a GGUF file into a cached Hugging Face checkpoint (config + safetensors + tokenizer), once.

transformers reads GGUF by dequantizing every tensor in numpy and parsing the whole vocabulary from the file's
metadata: tens of seconds for SmolLM2, minutes for Qwen-1.5B. We pay that once per file and save the result as
a plain checkpoint, which later loads in seconds. We save the tensors ourselves rather than through a
GGUF-loaded model's ``save_pretrained`` (which transformers refuses: "quantized with gguf and is not
serializable"), and need no ``accelerate``, which GGUF loading through ``from_pretrained`` requires.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

_FORMAT = "v1"  # bump when the converted layout changes, so stale caches are not reused
_DONE = "qwen_stream_converted.json"


def converted_dir(gguf_path: Path, cache_root: Path, sha256: str | None = None) -> Path:
    """Cache folder for one GGUF file: keyed by its sha256 when known (aliases), else by path, size, mtime."""
    if sha256:
        key = sha256[:16]
    else:
        st = gguf_path.stat()
        key = hashlib.sha256(f"{gguf_path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    return cache_root / "converted" / f"{gguf_path.stem}-{key}-{_FORMAT}"


def is_complete(folder: Path) -> bool:
    return (folder / _DONE).is_file()


def ensure_tokenizer(gguf_path: Path, target: Path, *, progress: bool) -> Path:
    """``target/tokenizer``: the GGUF's tokenizer saved in HF format (fast to load from then on)."""
    out = target / "tokenizer"
    if is_complete(out):
        return out

    def build(tmp: Path) -> None:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        tokenizer.save_pretrained(tmp)

    with _status(progress, f"Reading the tokenizer of {gguf_path.name} (once; cached for later loads)"):
        _build_atomically(out, build)
    return out


def ensure_checkpoint(gguf_path: Path, target: Path, *, progress: bool) -> Path:
    """``target/model``: config.json + model.safetensors dequantized from the GGUF (float16 where exact enough)."""
    out = target / "model"
    if is_complete(out):
        return out
    with _status(progress, f"Converting {gguf_path.name} to a PyTorch checkpoint (once; cached for later loads)"):
        _build_atomically(out, lambda tmp: _convert_weights(gguf_path, tmp))
    return out


def _convert_weights(gguf_path: Path, out: Path) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    # A model on the meta device costs nothing; transformers needs it only to map GGUF names to ours.
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config)
    tensors = _dequantize(gguf_path, skeleton, torch.float16)
    if not all(bool(t.isfinite().all()) for t in tensors.values()):
        tensors = _dequantize(gguf_path, skeleton, torch.float32)  # some weight overflows float16: keep fp32
    missing = set(skeleton.state_dict()) - set(tensors) - _tied_names(config)
    if missing:
        raise ValueError(f"{gguf_path.name}: the GGUF lacks tensors the model needs: {sorted(missing)[:5]}")
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(out)


def _dequantize(gguf_path: Path, skeleton: Any, dtype: Any) -> dict[str, Any]:
    """All weights, cast to ``dtype`` one by one right after dequantizing (peak RAM: the result, not fp32).

    float16 halves disk and RAM against float32 and holds 4-6 bit quantized weights (scale * q + min) almost
    exactly, far below the quantization error itself.
    """
    from transformers.modeling_gguf_pytorch_utils import load_gguf_checkpoint

    parsed = load_gguf_checkpoint(str(gguf_path), return_tensors=True, model_to_load=skeleton, torch_dtype=dtype)
    return {name: tensor.contiguous() for name, tensor in parsed["tensors"].items()}


def _tied_names(config: Any) -> set[str]:
    return {"lm_head.weight"} if getattr(config, "tie_word_embeddings", False) else set()


def _build_atomically(out: Path, build: Callable[[Path], None]) -> None:
    """Build into a temp folder beside ``out`` and rename it into place, so a crash never leaves half a cache."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        build(tmp)
        (tmp / _DONE).write_text(json.dumps({"format": _FORMAT, "pid": os.getpid()}))
        if is_complete(out):
            return  # another process finished first: keep theirs (it may be loading from it)
        if out.exists():
            shutil.rmtree(out)  # an incomplete earlier attempt
        try:
            tmp.rename(out)
        except OSError:
            if not is_complete(out):  # another process finished first: use theirs
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def _status(enabled: bool, message: str) -> Iterator[None]:
    """One line saying what is slow and why; transformers' own bars then show the dequantizing progress.

    (A spinner would fight with those tqdm bars for the terminal line.) With ``enabled`` False, stay silent.
    """
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    if enabled:
        print(f"qwen-stream: {message} ...", file=sys.stderr, flush=True)
    else:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled and not enabled:
            hf_logging.enable_progress_bar()
