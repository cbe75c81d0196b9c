#!/usr/bin/env bash
# Everything the tests need, then the checks: ruff, mypy, pytest (unit, engine, server, CLI in a pty,
# web in headless Chromium, end-to-end with the real smollm2-135m model), then the vLLM backend's tests in .venv-vllm.
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="llama,web,structured,bench,test" bash scripts/install.sh
# Debian's chromium for the browser tests, with fonts so Chinese and emoji render (and show in screenshots).
debs=(chromium fonts-wqy-microhei fonts-noto-color-emoji)
missing=()
for deb in "${debs[@]}"; do dpkg -s "$deb" >/dev/null 2>&1 || missing+=("$deb"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "Installing ${missing[*]} for the browser tests..."
  sudo=(); [ "$(id -u)" = 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -qq && "${sudo[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi
mkdir -p test-output
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest --all "$@"  # --all: the slow and browser tests too (plain pytest is the fast tier)
# The vLLM backend lives in its own venv (scripts/install_vllm.sh); its tests run there, the rest were run above.
# VLLM_TESTS=0 skips this part. It adds the venv (1.5-11 min) and three vLLM start-ups with their tests
# (12 min measured on the shared 2-core machine at load average 13; less on an idle one).
if [ "${VLLM_TESTS:-1}" != 0 ]; then
  bash scripts/install_vllm.sh vllm-test
  .venv-vllm/bin/python -m pytest -n 0 -m vllm tests/engine "$@"  # one vLLM engine at a time (each takes the cores)
fi
