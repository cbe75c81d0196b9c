"""A real uvicorn server on loopback around the session's tiny model, for hostile clients."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from qwen_stream.server.app import create_app
from tests.support.live_server import LiveServer

SERVED = "tiny-qwen"


@pytest.fixture(scope="module")
def server(tiny_chat_model: Any) -> Iterator[LiveServer]:
    with LiveServer(create_app(tiny_chat_model, served_model_name=SERVED, model_aliases=["tiny-alias"])) as live:
        yield live


@pytest.fixture()
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client
