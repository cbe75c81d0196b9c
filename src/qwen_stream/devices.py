"""Where and how a runner computes: the one place that turns device, dtype and thread options into torch's.

Every front end and runner resolves through these (the CLI, ``ChatModel.load``, the runner builders, the bench),
so "no device given" means the same thing everywhere: the CPU.
"""

from __future__ import annotations

import torch

_DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
           "float16": torch.float16, "fp16": torch.float16, "half": torch.float16}


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """None means the CPU; "auto" CUDA when present, else the CPU; "cuda"/"cuda:N" must actually be available."""
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a string or torch.device, got {type(device).__name__}")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} asked for, but CUDA is not available here; use 'cpu' or 'auto'")
    return dev


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """None means float32 on CPU and bfloat16 (float16 where unsupported) on CUDA."""
    if dtype is None:
        if device.type != "cuda":
            return torch.float32
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if isinstance(dtype, torch.dtype):
        if not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating point type, got {dtype}")
        return dtype
    if isinstance(dtype, str) and dtype.lower() in _DTYPES:
        return _DTYPES[dtype.lower()]
    raise ValueError(f"dtype must be a torch.dtype or one of {sorted(_DTYPES)}, got {dtype!r}")


def configure_threads(threads: int | None = None) -> int:
    """Set torch's intra-op threads (default: physical cores; hyper-threads slow matmuls down) and return it."""
    if threads is None:
        from qwen_stream.cpu import physical_cores

        threads = physical_cores()
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be an integer >= 1, got {threads!r}")
    torch.set_num_threads(threads)
    return threads
