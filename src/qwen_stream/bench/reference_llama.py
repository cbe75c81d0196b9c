"""llama-cpp-python's own ``Llama``, the reference our llama.cpp runner is compared with in benchmarks and tests.

Not part of the engine: only the bench (``llama-cpp-python`` system), tests/engine/runners/test_llamacpp.py and
benchmarks/runner_vs_llama_cpp_python.py use it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from qwen_stream.engine.runners.llamacpp import import_llama_cpp, safe_model_params

__all__ = ["open_reference_llama"]


def open_reference_llama(model_path: Path | str, **kwargs: Any) -> Any:
    """``Llama(model_path, **kwargs)``, loaded with our runner's ``safe_model_params``.

    ``Llama`` reads ``llama_model_default_params()`` and has no argument to turn the AMX buffers off, so the
    binding's default is swapped for the safe one while it loads."""
    ll: Any = import_llama_cpp()
    from llama_cpp import Llama

    default = ll.llama_model_default_params
    ll.llama_model_default_params = lambda: safe_model_params(default)
    try:
        return Llama(model_path=str(model_path), **kwargs)
    finally:
        ll.llama_model_default_params = default
