"""Fixtures of the protocol tests: tiny embedding models (tests/support/embedding_models.py) and a live loopback
server that serves a tiny encoder ("minilm-tiny") and the session's tiny chat model ("tiny-chat") side by side."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from server_harness import LiveServer
from support.embedding_models import tiny_encoder, tiny_encoder_dir, tiny_qwen3_embedding, tiny_qwen3_embedding_dir

from qwen_stream.server.app import create_app
from qwen_stream.server.pool.model_pool import PoolEntry

__all__ = ["tiny_encoder", "tiny_encoder_dir", "tiny_qwen3_embedding", "tiny_qwen3_embedding_dir"]


@pytest.fixture(scope="module")
def embed_server(tiny_encoder: Any, tiny_chat_model: Any) -> Iterator[LiveServer]:
    entries = [PoolEntry.pinned(tiny_encoder, "minilm-tiny"),
               PoolEntry.pinned(tiny_chat_model, "tiny-chat")]
    with LiveServer(create_app(entries)) as live:
        yield live
