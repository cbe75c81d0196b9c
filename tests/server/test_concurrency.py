"""Many clients at once: independent answers, and disconnected clients free their slots."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import httpx
import openai

from tests.support.live_server import LiveServer, aborted_requests, wait_until_idle


def _request(i: int) -> dict[str, Any]:
    # Different prompts, lengths, temperatures and seeds, so a mix-up between requests cannot go unnoticed.
    return {"model": "m", "messages": [{"role": "user", "content": f"Question number {i}: count to {i}."}],
            "max_tokens": 6 + i % 5, "temperature": 0.0 if i % 4 == 0 else 0.9, "seed": 1000 + i}


async def _stream_text(client: openai.AsyncOpenAI, body: dict[str, Any]) -> tuple[str, str | None]:
    text, finish = "", None
    stream = await client.chat.completions.create(stream=True, **body)
    async for chunk in stream:
        if chunk.choices:
            text += chunk.choices[0].delta.content or ""
            finish = chunk.choices[0].finish_reason or finish
    return text, finish


def test_32_concurrent_streams_get_their_own_answers(server: LiveServer, client: Any, tiny_chat_model: Any) -> None:
    alone = [client.chat.completions.create(**_request(i)).choices[0].message.content for i in range(32)]

    async def all_at_once() -> list[tuple[str, str | None]]:
        async with openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=120) as aclient:
            return await asyncio.gather(*(_stream_text(aclient, _request(i)) for i in range(32)))

    together = asyncio.run(all_at_once())
    assert [text for text, _ in together] == alone
    assert all(finish in ("stop", "length") for _, finish in together)
    assert wait_until_idle(tiny_chat_model)


def _aborted(metrics: str) -> float:
    """Aborted chat requests (the session's server also counts other routes' aborts)."""
    return aborted_requests(metrics, "/v1/chat/completions")


def test_disconnected_clients_free_their_slots(server: LiveServer, http: httpx.Client, client: Any, tiny_chat_model: Any) -> None:
    long_body = {"model": "m", "messages": [{"role": "user", "content": "Talk for a long time."}],
                 "max_tokens": 400, "temperature": 0.9, "stream": True}
    aborted_before = _aborted(http.get("/metrics").text)
    tokens_before = tiny_chat_model.engine.stats().generated_tokens

    async def leave_midway(http: httpx.AsyncClient, i: int) -> int:
        chunks = 0
        async with http.stream("POST", "/v1/chat/completions", json={**long_body, "seed": i}) as response:
            assert response.status_code == 200
            async for line in response.aiter_lines():
                chunks += line.startswith("data: ")
                if chunks == 3:
                    break  # leaving the block closes the connection mid-stream
        return chunks

    async def scenario() -> tuple[list[int], list[tuple[str, str | None]]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=60) as http, \
                openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0) as aclient:
            stayers = [asyncio.ensure_future(_stream_text(aclient, _request(i))) for i in range(6)]
            leavers = await asyncio.gather(*(leave_midway(http, i) for i in range(10)))
            return leavers, await asyncio.gather(*stayers)

    leavers, stayers = asyncio.run(scenario())
    assert leavers == [3] * 10
    assert [text for text, _ in stayers] == [client.chat.completions.create(**_request(i)).choices[0].message.content
                                             for i in range(6)]
    assert wait_until_idle(tiny_chat_model, timeout=5), tiny_chat_model.engine.stats()
    # The engine itself stopped them: far fewer tokens than 10 x 400 were computed (the stayers add <= 6 x 10).
    assert tiny_chat_model.engine.stats().generated_tokens - tokens_before < 10 * 100
    metrics = http.get("/metrics").text
    assert _aborted(metrics) - aborted_before == 10  # stopped early, not run to their 400 tokens
    assert 'qwen_stream_requests_running{model="tiny-qwen"} 0.0' in metrics
    # And the server keeps serving.
    assert client.chat.completions.create(**_request(3)).choices[0].message.content is not None


def test_non_streaming_client_that_leaves_aborts_its_request(server: LiveServer, http: httpx.Client, tiny_chat_model: Any) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "Talk."}], "max_tokens": 450, "temperature": 0.9}
    aborted_before = _aborted(http.get("/metrics").text)
    with contextlib.suppress(httpx.TimeoutException):  # the client gives up and closes the connection
        httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=0.3)
    assert wait_until_idle(tiny_chat_model, timeout=5)
    assert _aborted(http.get("/metrics").text) - aborted_before == 1
