"""Crowds: 100 clients cutting their connections at random moments leave nothing running within a second (the
session's tiny model); a burst over the queue limit gets 429 with Retry-After (never a 5xx), and the server keeps
answering everyone else (a scripted engine, held so that exactly the requests without room are refused)."""

from __future__ import annotations

import asyncio
import contextlib
import random
import threading
import time
from typing import Any

import httpx

from qwen_stream.server.app import create_app
from tests.support.live_server import LiveServer
from tests.support.scripted_backend import scripted_model

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


def test_an_overload_burst_gets_429_with_retry_after(qwen_tokenizer: Any) -> None:
    """120 requests at once on a scripted engine with the session model's limits (16 running, 64 waiting), held by
    its gate until the 40 it has no room for are answered: exactly those 40 get 429 with Retry-After, and the 80
    admitted then finish. The refusals are the server's and the admission rules the engines' own
    (tests/support/scripted_backend.py); the disconnect storm above is the real engine's crowd."""
    gate = threading.Event()
    model = scripted_model(qwen_tokenizer, name=SERVED, max_running=16, max_waiting=64, gate=gate)
    burst = model.engine.max_running + model.engine.max_waiting + 40  # 40 more than can run or wait

    async def all_at_once(url: str) -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=burst)
        async with httpx.AsyncClient(base_url=url, limits=limits, timeout=300) as http:
            sent = [asyncio.ensure_future(http.post(CHAT, json=body(i, max_tokens=24))) for i in range(burst)]
            deadline = time.monotonic() + 120
            while sum(task.done() for task in sent) < 40 and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            gate.set()
            return list(await asyncio.gather(*sent))

    try:
        with LiveServer(create_app(model, served_model_name=SERVED)) as live:
            responses = asyncio.run(all_at_once(live.url))
            assert httpx.get(live.url + "/health").json()["status"] == "ok"
    finally:
        gate.set()
        model.close()
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 80 + [429] * 40, statuses
    for response in responses:
        if response.status_code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert response.json()["error"]["code"] == "engine_overloaded"
        else:
            assert response.json()["choices"][0]["finish_reason"] == "length"
