"""The OpenMP defaults the package sets before torch loads (see qwen_stream/openmp.py)."""

from __future__ import annotations

import os
import subprocess
import sys

PROBE = "import os, qwen_stream; print(os.environ['OMP_WAIT_POLICY'], os.environ['GOMP_SPINCOUNT'])"


def run_probe(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    done = subprocess.run([sys.executable, "-c", PROBE], env={**clean, **env}, capture_output=True, text=True,
                          check=True, timeout=60)
    return done.stdout.strip()


def test_importing_the_package_sets_bounded_active_waiting() -> None:
    assert run_probe() == "ACTIVE 300000"


def test_settings_from_the_environment_win() -> None:
    assert run_probe(OMP_WAIT_POLICY="PASSIVE") == "PASSIVE 300000"
