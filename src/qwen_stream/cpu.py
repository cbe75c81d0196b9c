"""How many CPU threads compute should use: one per physical core this process may run on."""

from __future__ import annotations

import os


def physical_cores() -> int:
    """Physical cores we may run on: hyper-threads slow matmuls (torch and ggml alike) down rather than up."""
    try:
        logical_allowed = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        logical_allowed = os.cpu_count() or 1
    try:
        import psutil

        physical = psutil.cpu_count(logical=False) or logical_allowed
    except ImportError:
        physical = logical_allowed
    return max(1, min(physical, logical_allowed))


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none: not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def has_amx() -> bool:
    """Whether the CPU has Intel AMX tiles (Sapphire Rapids and later)."""
    return "amx_tile" in cpu_flags()


def has_native_bf16() -> bool:
    """Whether bfloat16 matmuls run in hardware (AVX-512 BF16 or AMX); elsewhere torch emulates them, several times
    slower than float32."""
    return bool({"avx512_bf16", "amx_bf16"} & cpu_flags())
