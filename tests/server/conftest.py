"""A real uvicorn server on loopback around the session's tiny model, and clients that talk to it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from qwen_stream.server.app import create_app
from tests.support.live_server import LiveServer


@pytest.fixture(scope="module")
def server(tiny_chat_model: Any) -> Iterator[LiveServer]:
    with LiveServer(create_app(tiny_chat_model, served_model_name="tiny-qwen", model_aliases=["m"])) as live:
        yield live


@pytest.fixture()
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as client:
        yield client


@pytest.fixture()
def client(server: LiveServer) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)
