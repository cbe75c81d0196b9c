#!/usr/bin/env bash
# Everything the tests need, then the checks: ruff, mypy, pytest (unit, engine, server, CLI in a pty,
# web in headless Chromium, end-to-end with the real smollm2-135m model).
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
.venv/bin/python -m pytest "$@"
