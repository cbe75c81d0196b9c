"""The runners the end-to-end tests run a real model on (llama.cpp only where llama-cpp-python is installed)."""

from __future__ import annotations

import importlib.util

import pytest

RUNNERS = ["torch", pytest.param("llamacpp", marks=pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed"))]
