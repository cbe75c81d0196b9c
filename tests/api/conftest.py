"""Fixtures of the Python API tests: the tiny embedding models (tests/support/embedding_models.py)."""

from support.embedding_models import tiny_encoder, tiny_encoder_dir, tiny_qwen3_embedding, tiny_qwen3_embedding_dir

__all__ = ["tiny_encoder", "tiny_encoder_dir", "tiny_qwen3_embedding", "tiny_qwen3_embedding_dir"]
