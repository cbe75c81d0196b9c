"""A real uvicorn server on loopback in a background thread, and a wait for an idle engine."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import uvicorn


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 (a free port) in a background thread."""

    def __init__(self, app: Any) -> None:
        self.app = app
        # IPPROTO_TCP named: asyncio sets TCP_NODELAY only on accepted sockets whose proto says TCP, and a socket
        # made with proto 0 left Nagle on, which with the client's delayed ACK cost ~40 ms per response.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def __enter__(self) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.should_exit = True
        self._thread.join(10)
        self._sock.close()


def wait_until_idle(model: Any, timeout: float = 10.0) -> bool:
    """True once the engine has nothing running or waiting (aborts land within a step or two)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = model.engine.stats()
        if stats.running == 0 and stats.waiting == 0 and model.engine.num_unfinished == 0:
            return True
        time.sleep(0.02)
    return False


def aborted_requests(metrics_text: str, route: str) -> float:
    """The ``qwen_stream_requests_total`` count of aborted requests on ``route``, from a /metrics page."""
    import re

    pattern = rf'^qwen_stream_requests_total\{{(?=[^}}]*finish_reason="abort")(?=[^}}]*route="{re.escape(route)}")[^}}]*\}} (\S+)$'
    match = re.search(pattern, metrics_text, re.M)
    return float(match.group(1)) if match else 0.0


def free_port() -> int:
    """A loopback port nobody listens on now (for a `qwen-stream serve` subprocess)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, proc: subprocess.Popen[str]) -> None:
    """Wait for a `qwen-stream serve` subprocess to answer /health with 200 (its model loaded)."""
    deadline = time.monotonic() + 180  # a fresh interpreter imports torch and transformers
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0]
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        time.sleep(0.2)
    raise AssertionError("the server never became ready")


def leave_stream_midway(url: str, route: str, body: dict[str, Any], counts: Callable[[str], bool],
                        after: int = 3) -> int:
    """POST a streaming ``body`` to ``route`` and hang up once ``after`` lines that ``counts`` accepts have arrived,
    as a client that goes away mid-answer; returns how many it saw (``after`` unless the stream ended first)."""

    async def go() -> int:
        seen = 0
        async with httpx.AsyncClient(base_url=url, timeout=60) as http, \
                http.stream("POST", route, json=body) as response:
            async for line in response.aiter_lines():
                seen += counts(line)
                if seen == after:
                    break
        return seen

    return asyncio.run(go())


def burst_while_held(send: Callable[[], Any], n: int, gate: threading.Event, admitted: int,
                     timeout: float = 60.0) -> list[Any]:
    """``n`` calls of ``send`` at once while ``gate`` holds a scripted engine (tests/support/scripted_backend.py):
    once the ``n - admitted`` requests it has no room for are answered, the gate opens and the admitted ones finish.
    Every answer, in sending order; no timing decides who is refused."""
    gate.clear()
    try:
        with ThreadPoolExecutor(n) as pool:
            futures = [pool.submit(send) for _ in range(n)]
            deadline = time.monotonic() + timeout
            while sum(f.done() for f in futures) < n - admitted:
                if time.monotonic() > deadline:
                    raise AssertionError(f"fewer than {n - admitted} of {n} requests were answered while held")
                time.sleep(0.01)
            gate.set()
            return [f.result() for f in futures]
    finally:
        gate.set()
