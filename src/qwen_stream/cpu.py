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


def has_amx() -> bool:
    """Whether the CPU has Intel AMX tiles (Sapphire Rapids and later), from /proc/cpuinfo (False elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return "amx_tile" in line.split()
    except OSError:
        pass
    return False
