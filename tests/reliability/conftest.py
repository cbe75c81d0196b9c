"""A real uvicorn server on loopback around the session's tiny model, for hostile clients."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent.parent / "server"))  # server_harness: one LiveServer for all tests
from server_harness import LiveServer

from qwen_stream.server.app import create_app

SERVED = "tiny-qwen"


@pytest.fixture(scope="module")
def server(tiny_chat_model: Any) -> Iterator[LiveServer]:
    with LiveServer(create_app(tiny_chat_model, served_model_name=SERVED, model_aliases=["tiny-alias"])) as live:
        yield live


@pytest.fixture()
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client
