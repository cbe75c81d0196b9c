"""`qwen-stream serve` as users run it: a real process, background loading, auth, clean exit on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from server_harness import free_port, wait_ready

from qwen_stream.cli.main import build_parser


def test_serve_defaults_to_loopback_and_port_8000() -> None:
    args = build_parser().parse_args(["serve"])
    assert (args.host, args.port, args.api_key, args.cors_origin, args.web) == ("127.0.0.1", 8000, None, None, False)
    args = build_parser().parse_args(["serve", "--cors-origin", "http://a", "--cors-origin", "http://b"])
    assert args.cors_origin == ["http://a", "http://b"]


def test_serve_process_loads_serves_and_exits_cleanly(tiny_model_dir: Path) -> None:
    port = free_port()
    env = {**os.environ, "QWEN_STREAM_API_KEY": "k3y"}
    cmd = [sys.executable, "-m", "qwen_stream.cli.main", "serve", "--model", str(tiny_model_dir), "--runner",
           "torch", "--context-length", "256", "--max-batch-size", "2", "--port", str(port), "--log-level", "warning"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(url, proc)
        body = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, "temperature": 0}
        assert httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60).status_code == 401  # key from the env
        # a fresh process's first answer builds its token tables: seconds on a busy 2-core machine
        answer = httpx.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": "Bearer k3y"},
                            timeout=60)
        assert answer.status_code == 200 and answer.json()["usage"]["completion_tokens"] >= 1
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, output
    assert f"{url}/v1" in output
