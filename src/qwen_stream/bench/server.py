"""Servers as bench systems: a child process and streaming clients over loopback.

- ``ours-server``: `qwen-stream serve`.
- ``llama-server`` / ``llama-server-ngram``: llama.cpp's own C++ server (see llama_server.py).
- ``ours-vllm``: `qwen-stream serve --backend vllm` (our front end and output layer over vLLM's engine).
- ``vllm-serve``: vLLM's own OpenAI server (``python -m vllm.entrypoints.openai.api_server``) on the same
  checkpoint, tokenizer and KV budget. Both vLLM systems need the vllm package: run the bench from .venv-vllm.

Each ``serve`` call is one client (on its own thread) reading the SSE stream of ``/v1/chat/completions``; the
token times are when each chunk reached the client, the way a user's app sees them. ``pid`` lets the harness
sample the server's memory rather than the bench's.
"""

from __future__ import annotations

import contextlib
import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from qwen_stream.bench import sampling as bench_sampling
from qwen_stream.bench.config import BenchConfig, Messages
from qwen_stream.bench.metrics import StreamTrace, now

STARTUP_TIMEOUT_S = 900.0  # first use of an alias may fetch it; vLLM starts in minutes on a busy CPU


SERVED_NAME = "bench"  # the model name requests ask for (servers that check it are given it as a name or alias)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class HttpServerSystem:
    """A server process speaking OpenAI's streaming chat completions; subclasses give the command line."""

    name = "server"
    concurrent = True
    keepalive = True  # reuse connections between requests
    health_path = "/health"  # answered 200 once the model is loaded

    def __init__(self, config: BenchConfig, command: list[str], port: int) -> None:
        import httpx

        self.config = config
        self.base_url = f"http://127.0.0.1:{port}"
        self.totals: dict[str, float] = {}  # what the server reports per request (llama-server: draft counts)
        # stderr to a file, not a pipe nobody reads while it runs: a chatty server would block once 64 kB are queued
        self._log = tempfile.TemporaryFile()  # noqa: SIM115  (lives as long as the server; closed in close())
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self._log)
        self.pid = self.process.pid
        self.client = httpx.Client(base_url=self.base_url, timeout=httpx.Timeout(600.0, connect=5.0),
                                   limits=httpx.Limits(max_connections=256,
                                                       max_keepalive_connections=256 if self.keepalive else 0))
        try:
            self._wait_ready()
        except BaseException:
            self.close()
            raise

    def _wait_ready(self) -> None:
        import httpx

        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise self.exit_error()
            try:
                if self.client.get(self.health_path).status_code == 200:
                    return
            except httpx.TransportError:
                pass  # not listening yet
            time.sleep(0.25)
        raise RuntimeError(f"{self.name} was not ready after {STARTUP_TIMEOUT_S:.0f} s")

    def exit_error(self) -> RuntimeError:
        """What to raise once the server process has gone: its exit status and the end of its log."""
        self._log.seek(0)
        err = self._log.read().decode(errors="replace")
        return RuntimeError(f"{self.name} exited with {self.process.returncode}: {err[-2000:]}")

    @contextlib.contextmanager
    def talking(self) -> Iterator[None]:
        """A lost connection to a server that has exited raises with its log, not as a bare transport error."""
        import httpx

        try:
            yield
        except httpx.TransportError:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=2)  # a crashing server may still be on its way out
            if self.process.poll() is None:
                raise  # alive: an ordinary transport error
            raise self.exit_error() from None

    def _body(self, messages: Messages) -> dict[str, Any]:
        body: dict[str, Any] = {"model": SERVED_NAME, "messages": messages, "max_tokens": self.config.max_tokens,
                                "stream": True, "stream_options": {"include_usage": True},
                                **self._sampling(messages)}  # as the in-process systems get it
        if self.config.force_length:
            body["ignore_eos"] = True  # vLLM's and llama-server's extension
        return body

    def _sampling(self, messages: Messages) -> dict[str, Any]:
        """The body's sampling fields (OpenAI's names plus top_k and repetition_penalty, as vLLM and ours take)."""
        return bench_sampling.ours(self.config.sampling, messages)

    def serve(self, messages: Messages, trace: StreamTrace) -> None:
        usage_tokens = None
        with self.talking(), self.client.stream("POST", "/v1/chat/completions", json=self._body(messages)) as response:
            if response.status_code != 200:
                raise RuntimeError(f"server answered {response.status_code}: {response.read()[:500]!r}")
            for line in response.iter_lines():
                if not line.startswith("data: ") or line == "data: [DONE]":
                    continue
                chunk = json.loads(line[6:])
                t = now()
                if chunk.get("usage"):
                    usage_tokens = chunk["usage"].get("completion_tokens")
                self._record(chunk)
                for choice in chunk.get("choices", []):
                    delta = (choice.get("delta") or {}).get("content") or ""
                    if delta:
                        trace.add_tokens(t, 1)  # a chunk per engine step; usage below fixes the count
                        trace.add_text(t, delta)
        if usage_tokens is not None and trace.token_times and usage_tokens > trace.n_tokens:
            trace.add_tokens(trace.token_times[-1], usage_tokens - trace.n_tokens)

    def _record(self, chunk: dict[str, Any]) -> None:
        """Hook for server-specific fields of a chunk."""

    def reset_cache(self) -> None:
        pass

    def stats(self) -> dict[str, float]:
        return dict(self.totals)

    def close(self) -> None:
        self.client.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def serve_command(config: BenchConfig, port: int, *options: str) -> list[str]:
    """`qwen-stream serve` on ``port`` with ``options``, on the bench's model and threads (a child process)."""
    command = [sys.executable, "-m", "qwen_stream.cli.main", "serve", "--port", str(port), "--log-level", "warning",
               *options]
    if config.model:
        command += ["--model", config.model]
    if config.threads:
        command += ["--threads", str(config.threads)]
    return command


class ServerSystem(HttpServerSystem):
    """`qwen-stream serve` in a child process."""

    name = "ours-server"

    def __init__(self, config: BenchConfig) -> None:
        port = free_port()
        command = serve_command(config, port, "--max-batch-size", str(config.max_batch_size), "--context-length",
                                str(config.context_length), "--no-prefix-cache",  # see reset_cache
                                # the KV llama-server gets (-np N -c N x context): memory compares at one context
                                "--kv-budget", str(config.max_batch_size * config.context_length),
                                "--model-alias", SERVED_NAME)  # `serve` answers 404 to a name it does not serve
        super().__init__(config, command, port)

    def reset_cache(self) -> None:
        pass  # HTTP has no way to empty the cache between measurements, so the server runs without one


def _require_vllm() -> None:
    from qwen_stream.engine.vllm.backend import require_vllm

    require_vllm()


class OursVllmServer(HttpServerSystem):
    """`qwen-stream serve --backend vllm`: our front end and output layer over vLLM's engine."""

    name = "ours-vllm"

    def __init__(self, config: BenchConfig) -> None:
        _require_vllm()
        port = free_port()
        command = [sys.executable, "-m", "qwen_stream.cli.main", "serve", "--backend", "vllm", "--port", str(port),
                   "--log-level", "warning", "--max-batch-size", str(config.max_batch_size), "--context-length",
                   str(config.context_length), "--no-prefix-cache",  # as vllm-serve: see reset_cache
                   "--model-alias", SERVED_NAME]
        if config.model:
            command += ["--model", config.model]
        if config.dtype:
            command += ["--dtype", config.dtype]
        super().__init__(config, command, port)


class VllmServeSystem(HttpServerSystem):
    """vLLM's own OpenAI server on the checkpoint and tokenizer our vLLM backend uses, with the same KV budget."""

    name = "vllm-serve"

    def __init__(self, config: BenchConfig) -> None:
        from qwen_stream.engine.vllm.backend import vllm_model_settings
        from qwen_stream.models import sources

        _require_vllm()
        port = free_port()
        source = sources.resolve_source(config.model, progress=False)
        settings = vllm_model_settings(sources.hf_checkpoint_dir(source, progress=False), dtype=config.dtype,
                                       max_model_len=config.context_length, max_running=config.max_batch_size)
        command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--host", "127.0.0.1", "--port",
                   str(port), "--model", str(settings.model_dir), "--tokenizer",
                   str(sources.hf_tokenizer_dir(source, progress=False)), "--served-model-name", SERVED_NAME,
                   "--dtype", settings.dtype, "--max-model-len", str(config.context_length), "--max-num-seqs",
                   str(config.max_batch_size), "--no-enable-prefix-caching", "--generation-config", "vllm",
                   "--uvicorn-log-level", "warning", "--disable-uvicorn-access-log"]
        if settings.kv_cache_bytes is not None:
            command += ["--kv-cache-memory-bytes", str(settings.kv_cache_bytes)]
        super().__init__(config, command, port)
