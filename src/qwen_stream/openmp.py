"""OpenMP settings for a process whose model steps run on a thread other than the one that loaded the model.

Imported by the package before torch, so it takes effect for ``qwen-stream`` commands and for programs that import
``qwen_stream`` first; settings already in the environment win, and once torch is loaded it changes nothing.

Why: the engine steps on its own thread, and the main thread has usually run torch ops too (loading), so the
process holds two OpenMP thread teams. GNU OpenMP then counts more threads than cores and throttles its barrier
spinning to almost nothing, so every parallel op in a decode step pays a sleep/wake-up. Measured on 2 cores,
SmolLM2-135M's float32 decode projections: 18.5 ms on the main thread, 25 ms on a second thread; with
``OMP_WAIT_POLICY=ACTIVE`` and ``GOMP_SPINCOUNT=300000`` (the spin libgomp uses anyway when not oversubscribed)
the second thread runs them in 17-21 ms. An idle team still goes to sleep after that bounded spin.
"""

from __future__ import annotations

import os

SETTINGS = {"OMP_WAIT_POLICY": "ACTIVE", "GOMP_SPINCOUNT": "300000"}


def apply_defaults() -> None:
    for name, value in SETTINGS.items():
        os.environ.setdefault(name, value)
