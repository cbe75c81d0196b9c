"""Model loading: built-in aliases, HF directories, GGUF files and hub ids; chat prompting.

Submodules import torch/transformers lazily where they can, so `qwen_stream.models.registry` stays light.
"""
