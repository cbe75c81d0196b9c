"""Finding models and reading their files: built-in aliases, HF folders, GGUF files, hub ids, tokenizers.

Submodules import torch/transformers lazily where they can, so `qwen_stream.models.registry` stays light.
"""
