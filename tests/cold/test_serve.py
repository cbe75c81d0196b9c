"""`qwen-stream serve` as users run it: a real process, background loading, auth, clean exit on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.support.live_server import free_port, wait_ready

pytestmark = pytest.mark.cold  # fresh interpreters: the cold tier (tests/conftest.py)


def test_serve_loads_the_first_model_serves_with_a_key_loads_others_on_demand_and_exits_cleanly(
        tiny_model_dir: Path) -> None:
    """One `qwen-stream serve` process (a start costs seconds) for: the API key from the environment, the first of
    several models loaded at start and the others on their first request (least recently used unloaded past
    --max-loaded-models 1), and a clean exit on Ctrl-C that said where it served."""
    port = free_port()
    env = {**os.environ, "QWEN_STREAM_API_KEY": "k3y"}
    cmd = [sys.executable, "-m", "qwen_stream.cli.main", "serve", "-c", f"first={tiny_model_dir}", "-c",
           f"second={tiny_model_dir}", "--runner", "torch", "--context-length", "256", "--max-batch-size", "2",
           "--max-loaded-models", "1", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    key = {"Authorization": "Bearer k3y"}
    try:
        wait_ready(url, proc)
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}
        assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).status_code == 401  # key from the env
        # a fresh process's first answer builds its token tables: seconds on a busy 2-core machine
        answer = httpx.post(f"{url}/v1/chat/completions", json=body, headers=key, timeout=60)
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] >= 1
        assert answer.json()["model"] == "first"  # the default: the first model named
        assert [m["id"] for m in httpx.get(f"{url}/v1/models", headers=key).json()["data"]] == ["first", "second"]
        assert httpx.get(f"{url}/health").json()["models"] == {"first": "loaded", "second": "not loaded"}
        second = {"model": "second", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        answer = httpx.post(f"{url}/v1/chat/completions", json=second, headers=key, timeout=120)  # waits for its load
        assert answer.status_code == 200 and answer.json()["model"] == "second"
        assert [m["name"] for m in httpx.get(f"{url}/api/ps", headers=key).json()["models"]] == ["second"]  # LRU
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert f"{url}/v1" in output and "serving first, second" in output
