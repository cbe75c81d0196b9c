"""Crowds: 100 clients cutting their connections at random moments leave nothing running within a second; a burst
over the queue limit gets 429 with Retry-After (never a 5xx), and the server keeps answering everyone else."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from typing import Any

import httpx

from tests.support.live_server import LiveServer

SERVED = "tiny-qwen"  # the served name (tests/conftest.py)
CHAT = "/v1/chat/completions"


def body(i: int, **changes: Any) -> dict[str, Any]:
    return {"model": SERVED, "messages": [{"role": "user", "content": f"Tell story number {i}."}],
            "max_tokens": 300, "temperature": 0.9, "seed": i, "ignore_eos": True, **changes}


async def cut_after(http: httpx.AsyncClient, i: int, rng: random.Random) -> int:
    """A client that leaves at a random moment: before the answer starts, mid-stream, or while waiting for JSON.
    The deadline covers the whole exchange (an httpx timeout is per read, so a stream that keeps coming would be
    read to its end), and cancelling it closes the connection as a client that goes away does. Returns how many
lines of a stream arrived before the cut."""
    delay = rng.uniform(0.0, 3.0)
    stream = rng.random() < 0.7
    lines = 0

    async def ask() -> None:
        nonlocal lines
        if stream:
            async with http.stream("POST", CHAT, json=body(i, stream=True)) as response:
                async for _ in response.aiter_lines():
                    lines += 1
        else:
            await http.post(CHAT, json=body(i))

    with contextlib.suppress(asyncio.TimeoutError, httpx.HTTPError):
        await asyncio.wait_for(ask(), delay)
    return lines


def test_a_disconnect_storm_leaves_nothing_running(server: LiveServer, http: httpx.Client,
                                                   tiny_chat_model: Any) -> None:
    rng = random.Random(10)
    assert http.post(CHAT, json=body(0, max_tokens=2)).status_code == 200  # warm: a first answer builds tables

    async def storm() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=60) as http:
            return await asyncio.gather(*(cut_after(http, i, rng) for i in range(100)))

    lines = asyncio.run(storm())
    cut_at = time.monotonic()
    assert any(n > 1 for n in lines), lines  # streams were cut mid-answer too, not only before it
    while tiny_chat_model.engine.num_unfinished and time.monotonic() - cut_at < 1.0:
        time.sleep(0.01)
    assert tiny_chat_model.engine.num_unfinished == 0, tiny_chat_model.engine.stats()
    stats = tiny_chat_model.engine.stats()
    assert stats.running == 0 and stats.waiting == 0
    answer = httpx.post(server.url + CHAT, json=body(1, max_tokens=4, ignore_eos=False), timeout=60)
    assert answer.status_code == 200 and httpx.get(server.url + "/health").json()["status"] == "ok"


def test_an_overload_burst_gets_429_with_retry_after(server: LiveServer, tiny_chat_model: Any) -> None:
    engine = tiny_chat_model.engine
    burst = engine.max_running + engine.max_waiting + 40  # 40 more than can run or wait

    async def all_at_once() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=burst)
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=300) as http:
            return await asyncio.gather(*(http.post(CHAT, json=body(i, max_tokens=24)) for i in range(burst)))

    responses = asyncio.run(all_at_once())
    statuses = [r.status_code for r in responses]
    refused = [r for r in responses if r.status_code == 429]
    assert set(statuses) <= {200, 429}, statuses
    assert len(refused) >= 40
    for response in refused:
        assert int(response.headers["Retry-After"]) >= 1
        assert response.json()["error"]["code"] == "engine_overloaded"
    for response in responses:
        if response.status_code == 200:
            assert response.json()["choices"][0]["finish_reason"] == "length"
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
