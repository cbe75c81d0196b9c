"""Graceful shutdown of a `qwen-stream serve` process: on SIGTERM the server refuses new work (503) and gives
running streams --shutdown-timeout to finish; those still running then end with finish_reason "abort". Every client
gets a finish chunk and [DONE]. (A draining server's refusals, in process: tests/server/test_service.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest

from tests.support.live_server import free_port, wait_ready

pytestmark = pytest.mark.cold  # fresh interpreters: the cold tier (tests/conftest.py)

CHAT = "/v1/chat/completions"


def _stream_lines(url: str, max_tokens: int, into: list[list[str]], started: threading.Event) -> None:
    body = {"messages": [{"role": "user", "content": "Tell a long story."}], "max_tokens": max_tokens,
            "temperature": 0.9, "seed": max_tokens, "ignore_eos": True, "stream": True}
    lines: list[str] = []
    try:
        with httpx.stream("POST", f"{url}{CHAT}", json=body, timeout=120) as response:
            for line in response.iter_lines():
                if line:
                    lines.append(line)
                    started.set()
    except httpx.HTTPError as exc:
        lines.append(f"ERROR {exc!r}")
    into.append(lines)


def _finish_reason(lines: list[str]) -> str | None:
    for line in reversed(lines):
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices", []):
                if choice.get("finish_reason"):
                    return str(choice["finish_reason"])
    return None


def test_sigterm_lets_short_streams_finish_and_ends_long_ones_with_a_terminal_frame(tiny_model_dir: Path) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "qwen_stream.cli.main", "serve", "--model", str(tiny_model_dir), "--runner",
           "torch", "--context-length", "2048", "--max-batch-size", "4", "--port", str(port), "--log-level",
           "warning", "--shutdown-timeout", "3", "--no-speculate"]
    # 3 s: the 4-token stream finishes well within it even on a loaded machine, while 2000 tokens cannot, even
    # on an idle one (12 s let the tiny model finish them; speculation on its repetitive text made it faster still).
    proc = subprocess.Popen(cmd, env=os.environ.copy(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    results: list[list[str]] = []
    try:
        wait_ready(url, proc)
        threads = []
        for max_tokens in (4, 2000, 2000):  # one that ends within the timeout, two that cannot
            started = threading.Event()
            thread = threading.Thread(target=_stream_lines, args=(url, max_tokens, results, started))
            thread.start()
            started.wait(60)
            threads.append(thread)
        proc.send_signal(signal.SIGTERM)
        for thread in threads:
            thread.join(60)
        output, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert len(results) == 3, results
    reasons = sorted(_finish_reason(lines) or "none" for lines in results)
    assert reasons == ["abort", "abort", "length"], (reasons, output)
    for lines in results:
        assert lines[-1] == "data: [DONE]", lines[-3:]
    assert proc.returncode in (0, -signal.SIGTERM), output  # uvicorn re-raises the signal once it is done
