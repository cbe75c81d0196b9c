#!/usr/bin/env bash
# Install qwen-stream into ./.venv (idempotent). The first run builds llama-cpp-python from source:
# about 9 minutes on 2 cores, then pip reuses the cached wheel.
#   EXTRAS=llama,web,structured (default)   which optional parts to install; add ",test" for the test suite
#   add ",vllm" to also build .venv-vllm, a second venv with vLLM as an engine backend (scripts/install_vllm.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${EXTRAS:-llama,web,structured}"
want_vllm=0
if [[ ",$extras," == *",vllm,"* ]]; then  # never into .venv: see scripts/install_vllm.sh
  want_vllm=1
  extras=$(echo ",$extras," | sed 's/,vllm,/,/g; s/^,//; s/,$//')
fi
python="${PYTHON:-python3}"

[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
# Pinned first: an unpinned torch would pull a multi-GB CUDA build; 2.13.0 has a CPU wheel on this kind of machine.
"${pip[@]}" install -q "torch==${TORCH_VERSION:-2.13.0}"
if [[ ",$extras," == *",llama,"* ]] && ! .venv/bin/python -c "import llama_cpp" 2>/dev/null; then
  echo "Building llama-cpp-python (first time only: about 9 minutes on 2 cores)..."
fi
"${pip[@]}" install -q -e ".${extras:+[$extras]}"
echo "qwen-stream installed in .venv ($(.venv/bin/python -c 'import qwen_stream; print(qwen_stream.__version__)'))"
if [ "$want_vllm" = 1 ]; then
  bash scripts/install_vllm.sh "$extras"
fi
