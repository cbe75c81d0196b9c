"""Fixtures of the protocol tests: a live loopback server that serves a tiny encoder ("minilm-tiny") and the
session's tiny chat model ("tiny-chat") side by side, for the embedding and ranking routes of every protocol."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from qwen_stream.server.app import create_app
from qwen_stream.server.pool.model_pool import PoolEntry
from tests.support.live_server import LiveServer


@pytest.fixture(scope="session")
def embed_server(tiny_encoder: Any, tiny_chat_model: Any) -> Iterator[LiveServer]:
    entries = [PoolEntry.pinned(tiny_encoder, "minilm-tiny"), PoolEntry.pinned(tiny_chat_model, "tiny-chat")]
    with LiveServer(create_app(entries)) as live:
        yield live
