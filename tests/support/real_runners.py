"""The runners the end-to-end tests run a real model on (llama.cpp only where llama-cpp-python is installed), and the
one the shared Qwen2.5-Coder-1.5B runs on."""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest

from qwen_stream.cpu import has_native_bf16

HAS_LLAMA_CPP = importlib.util.find_spec("llama_cpp") is not None
RUNNERS = ["torch", pytest.param("llamacpp", marks=pytest.mark.skipif(
    not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed"))]

QWEN_CODER = "qwen2.5-coder-1.5b"
# The PyTorch runner's dtype for the 1.5B: bfloat16 where the CPU computes it (half of float32's 7 GB), float32
# where torch would emulate it (AVX2 only: the tool tests took ~170 s in emulated bfloat16).
TORCH_DTYPE = "bfloat16" if has_native_bf16() else "float32"
# Qwen2.5-Coder-1.5B on llama.cpp, its GGUF as published; where llama-cpp-python is missing, the PyTorch runner.
QWEN_CODER_RUNNER: dict[str, Any] = {"runner": "llamacpp"} if HAS_LLAMA_CPP else {"runner": "torch",
                                                                                  "dtype": TORCH_DTYPE}
