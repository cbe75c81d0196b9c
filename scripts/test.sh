#!/usr/bin/env bash
# Everything the tests need, then the checks: ruff, mypy, pytest (unit, engine, server, CLI in a pty,
# web in headless Chromium, end-to-end with the real smollm2-135m model).
set -euo pipefail
cd "$(dirname "$0")/.."
EXTRAS="llama,web,test" bash scripts/install.sh
if ! command -v chromium >/dev/null 2>&1; then
  echo "Installing Debian's chromium for the browser tests..."
  if [ "$(id -u)" = 0 ]; then apt-get update -qq && apt-get install -y -qq chromium >/dev/null; \
  else sudo apt-get update -qq && sudo apt-get install -y -qq chromium >/dev/null; fi
fi
mkdir -p test-output
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
