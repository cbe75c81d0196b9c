"""The runners the end-to-end tests run a real model on (llama.cpp only where llama-cpp-python is installed), and the
one the shared Qwen2.5-Coder-1.5B runs on."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
RUNNERS = ["torch", pytest.param("llamacpp", marks=pytest.mark.skipif(
    not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed"))]

QWEN_CODER = "qwen2.5-coder-1.5b"
# Qwen2.5-Coder-1.5B on llama.cpp, its GGUF as published; where llama-cpp-python is missing, the PyTorch runner in
# bfloat16 (half of float32's 7 GB on a machine others share; several times slower on a CPU without AVX-512).
QWEN_CODER_RUNNER: dict[str, Any] = {"runner": "llamacpp"} if HAS_LLAMA_CPP else {"runner": "torch",
                                                                                  "dtype": "bfloat16"}
