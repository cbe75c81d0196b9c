"""The ``long`` workload: a coding agent's first request, a long prompt computed cold, one stream.

An agent opens a session with a system prompt, a file or two of code and a question: ~2,400 tokens that nothing
has cached yet. What the user waits for is the time to the first token (TTFT), which that prompt's prefill
dominates; then the answer streams at the decode speed. Four servers, side by side, each with one slot and a
4096-token context:

- ``ours-int8``: `qwen-stream serve --prefill int8` (prompt chunks through int8 GEMMs; built at start-up),
- ``ours``: `qwen-stream serve --prefill llamacpp` (llama.cpp's kernels only: the path before int8 prefill),
- ``llama-server``: llama.cpp's C++ server (skipped, saying why, when no binary is configured),
- ``llama-cpp-python``: its own OpenAI server, ``python -m llama_cpp.server`` (skipped when it cannot be imported).

Every round builds a fresh prompt whose first line carries a random nonce, so that no server serves it from a
prompt cache, and sends it to every system in turn, the order rotated each round (a busy machine slows all alike).
One untimed round first takes each process's first-request costs out of the medians (its TTFT is reported apart).
Requests are greedy streaming ``POST /v1/chat/completions`` with exactly ``max_tokens`` new tokens (end of turn
disabled). Reported per system: median TTFT, median decode tokens/s after the first token, prompt tokens (the
server's own count); and the ratios ours-int8 / each peer for TTFT (below 1 is faster) and ours-int8 / ours for
decode speed (about 1: int8 prefill must not slow decoding).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from qwen_stream.bench import sampling as bench_sampling
from qwen_stream.bench.config import BenchConfig, Messages
from qwen_stream.bench.metrics import StreamTrace, now
from qwen_stream.bench.server import SERVED_NAME, HttpServerSystem, free_port, serve_command

CONTEXT_LENGTH = 4096
PROMPT_TOKENS = 2400
CHARS_PER_TOKEN = 3.5  # Python source with Qwen's (and SmolLM2's) tokenizers; the servers report the real count
# The "repository" the agent was shown: this package's own modules, in this order, until the prompt is long enough
SOURCE_FILES = ("metrics.py", "server.py", "llama_server.py", "sampling.py", "fim.py", "embed.py")
SYSTEM_PROMPT = (
    "You are a coding agent working in the user's repository. You read the files you are given, reason about them "
    "and answer with the smallest change that fixes the problem. Quote code exactly; give changes as unified diffs "
    "against the files shown; never invent functions that are not in them. Be brief.")
QUESTION = (
    "The bench sometimes reports a decode speed of inf or nan for a stream, and its TTFT looks too small. Find the "
    "bug in the code above, explain it in two sentences, and give the fix as a unified diff.")
RATIOS = {  # name: (numerator system, denominator system, figure)
    "ttft_int8_vs_llama_server": ("ours-int8", "llama-server", "ttft_ms"),
    "ttft_int8_vs_llama_cpp_python": ("ours-int8", "llama-cpp-python", "ttft_ms"),
    "ttft_int8_vs_ours": ("ours-int8", "ours", "ttft_ms"),
    "decode_int8_vs_ours": ("ours-int8", "ours", "decode_tps"),
}


def build_messages(nonce: str, prompt_tokens: int = PROMPT_TOKENS) -> Messages:
    """The agent's first request, about ``prompt_tokens`` long: the nonce on the system prompt's first line, then
    the code as files the agent read (cut at a line once long enough), then the question."""
    system = f"Session {nonce}.\n{SYSTEM_PROMPT}"
    budget = int(prompt_tokens * CHARS_PER_TOKEN) - len(system) - len(QUESTION)
    parts: list[str] = []
    used = 0
    here = Path(__file__).parent
    for name in SOURCE_FILES * 8:  # repeated if a large --prompt-tokens outruns the files
        header = f"File qwen_stream/bench/{name}:\n```python\n"
        room = budget - used - len(header) - len("```\n\n")
        if room < 200:  # too little left for a useful piece of a file
            break
        text = (here / name).read_text(encoding="utf-8")
        if len(text) > room:  # the last file is cut at a line, as an agent's read tool pages a long file
            text = text[:text.rfind("\n", 0, room) + 1]
        parts.append(f"{header}{text}```\n\n")
        used += len(parts[-1])
    return [{"role": "system", "content": system}, {"role": "user", "content": "".join(parts) + QUESTION}]


@dataclass(slots=True)
class Sample:
    """One request as its client saw it."""

    ttft_ms: float
    decode_tps: float | None  # tokens/s after the first token; None for fewer than two tokens
    tokens: int
    prompt_tokens: int | None  # the server's count (usage or llama-server's timings); None where it gives none


def sample_of(trace: StreamTrace, prompt_tokens: int | None) -> Sample:
    """A request's figures from its stream as HttpServerSystem.serve recorded it (tokens from ``usage`` where the
    server streams it, else one per content delta; the first token's own time is not decode time)."""
    if trace.ttft is None:
        raise RuntimeError("the stream had no content")
    return Sample(1000 * trace.ttft, trace.decode_tps, trace.n_tokens, prompt_tokens)


class ChatServer(HttpServerSystem):
    """A server streaming ``/v1/chat/completions`` (HttpServerSystem's own request and stream reading);
    ``fields`` are its body's sampling and length fields."""

    def __init__(self, name: str, config: BenchConfig, command: list[str], port: int, fields: dict[str, Any],
                 health_path: str = "/health") -> None:
        self.name = name
        self.fields = fields
        self.health_path = health_path  # read while __init__ waits for the server (llama-cpp-python has no /health)
        self._prompt_tokens: int | None = None
        super().__init__(config, command, port)

    def _sampling(self, messages: Messages) -> dict[str, Any]:
        return self.fields

    def _record(self, chunk: dict[str, Any]) -> None:
        # the prompt's length as the server counted it: OpenAI's usage, or llama-server's timings
        usage, timings = chunk.get("usage") or {}, chunk.get("timings") or {}
        self._prompt_tokens = usage.get("prompt_tokens", timings.get("prompt_n", self._prompt_tokens))

    def ask(self, messages: Messages) -> Sample:
        self._prompt_tokens = None
        trace = StreamTrace(now())
        self.serve(messages, trace)
        return sample_of(trace, self._prompt_tokens)


Launch = tuple[list[str], int, dict[str, Any], str]  # command, port, body fields, the path that answers when ready


def start_systems(config: BenchConfig, skipped: dict[str, str]) -> tuple[list[ChatServer], dict[str, float]]:
    """The four servers, one after another (each start printed: int8 weights take about a minute on 1.5B)."""
    from qwen_stream.cpu import physical_cores

    threads = str(config.threads or physical_cores())
    greedy = bench_sampling.ours("greedy", [])
    slot = ("--max-batch-size", "1", "--context-length", str(config.context_length),
            "--kv-budget", str(config.context_length), "--model-alias", SERVED_NAME,
            "--cache-reuse", "0")  # off: the code after the nonce repeats every round and must be computed again

    def ours(mode: str) -> Launch:
        port = free_port()
        return serve_command(config, port, *slot, "--prefill", mode), port, {**greedy, "ignore_eos": True}, "/health"

    def llama_server() -> Launch:
        from qwen_stream.bench.llama_server import command_for

        port = free_port()
        return (command_for(config, port, speculative=False), port,
                {**bench_sampling.llama_server("greedy", [], config.context_length), "ignore_eos": True}, "/health")

    def llama_cpp_python() -> Launch:
        try:
            import llama_cpp.server.app  # noqa: F401  (its extras: sse-starlette, starlette-context, pydantic-settings)
        except ImportError as exc:
            raise ImportError(f"llama_cpp.server cannot be imported ({exc}): "
                              "pip install 'llama-cpp-python[server]'") from None
        port = free_port()
        command = [sys.executable, "-m", "llama_cpp.server", "--model", str(_gguf(config)), "--host", "127.0.0.1",
                   "--port", str(port), "--n_ctx", str(config.context_length), "--n_threads", threads,
                   "--n_threads_batch", threads, "--model_alias", SERVED_NAME, "--verbose", "false"]
        # it has no ignore_eos: min_tokens holds end of turn off until max_tokens; its repeat_penalty defaults to 1.1
        return command, port, {**bench_sampling.llama_server("greedy", [], config.context_length),
                               "min_tokens": config.max_tokens}, "/v1/models"  # it has no /health

    makers = {"ours-int8": lambda: ours("int8"), "ours": lambda: ours("llamacpp"), "llama-server": llama_server,
              "llama-cpp-python": llama_cpp_python}
    servers: list[ChatServer] = []
    load_s: dict[str, float] = {}
    for name, make in makers.items():
        started = time.perf_counter()
        try:
            command, port, fields, health = make()
            _progress(f"starting {name}" + (" (builds its int8 weights first: a minute on a 1.5B model)"
                                            if name == "ours-int8" else ""))
            server = ChatServer(name, config, command, port, fields, health)
        except (ImportError, OSError, ValueError, RuntimeError) as exc:  # a missing peer costs the others nothing
            skipped[name] = str(exc)
            _progress(f"skipping {name}: {str(exc)[-300:]}")
            continue
        load_s[name] = time.perf_counter() - started
        _progress(f"{name} ready in {load_s[name]:.1f} s")
        servers.append(server)
    return servers, load_s


def _gguf(config: BenchConfig) -> Path:
    from qwen_stream.models import sources

    source = sources.resolve_source(config.model, progress=False)
    if source.kind != "gguf":
        raise ValueError("llama-cpp-python needs a .gguf model")
    return Path(source.path)


def _progress(line: str) -> None:
    print(f"long: {line}", file=sys.stderr, flush=True)


def run_long(config: BenchConfig, rounds: int, prompt_tokens: int = PROMPT_TOKENS) -> dict[str, Any]:
    """Every system through a warm-up round and ``rounds`` timed rounds; per-system medians and the ratios."""
    skipped: dict[str, str] = {}
    payload: dict[str, Any] = {"workload": "long", "model": config.model, "max_tokens": config.max_tokens,
                               "context_length": config.context_length, "prompt_tokens_target": prompt_tokens,
                               "rounds": rounds, "load": os.getloadavg(), "skipped": skipped}
    servers, load_s = start_systems(config, skipped)
    try:
        warm: dict[str, float] = {}
        samples: dict[str, list[Sample]] = {s.name: [] for s in servers}
        for k in range(rounds + 1):
            messages = build_messages(uuid.uuid4().hex[:12], prompt_tokens)
            order = servers[k % len(servers):] + servers[:k % len(servers)] if servers else []
            for server in order:
                sample = server.ask(messages)
                if k == 0:
                    warm[server.name] = sample.ttft_ms
                else:
                    samples[server.name].append(sample)
            done = ", ".join(f"{s.name} {(samples[s.name][-1].ttft_ms if k else warm[s.name]):.0f} ms"
                             for s in order)
            _progress(f"{'warm-up round' if k == 0 else f'round {k}/{rounds}'}: TTFT {done}")
    finally:
        for server in servers:
            server.close()
    rows = {name: summarize(name, got, warm[name], load_s[name]) for name, got in samples.items()}
    payload.update(results=list(rows.values()), ratios=ratios(rows), load_after=os.getloadavg())
    return payload


def summarize(name: str, samples: list[Sample], warm_up_ttft_ms: float, start_s: float) -> dict[str, Any]:
    """One system's medians over its timed rounds (and every sample, for the JSON)."""
    speeds = [s.decode_tps for s in samples if s.decode_tps is not None]
    prompts = [s.prompt_tokens for s in samples if s.prompt_tokens is not None]
    return {"system": name, "rounds": len(samples), "ttft_ms": statistics.median(s.ttft_ms for s in samples),
            "ttft_min_ms": min(s.ttft_ms for s in samples), "ttft_max_ms": max(s.ttft_ms for s in samples),
            "decode_tps": statistics.median(speeds) if speeds else None,
            "tokens": statistics.median(s.tokens for s in samples),
            "prompt_tokens": statistics.median(prompts) if prompts else None,
            "warm_up_ttft_ms": warm_up_ttft_ms, "start_s": start_s, "samples": [asdict(s) for s in samples]}


def ratios(rows: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """ours-int8 over each peer (RATIOS); None where a system was skipped or a figure is missing."""
    result: dict[str, float | None] = {}
    for key, (ours, peer, figure) in RATIOS.items():
        a, b = (rows.get(ours) or {}).get(figure), (rows.get(peer) or {}).get(figure)
        result[key] = a / b if a is not None and b else None
    return result


def print_long(payload: dict[str, Any]) -> None:
    load = payload["load"]
    print(f"long workload: {payload['model'] or 'default model'}, a coding agent's first request (~"
          f"{payload['prompt_tokens_target']} prompt tokens, cold), {payload['max_tokens']} new tokens, one slot, "
          f"context {payload['context_length']}; {payload['rounds']} rounds, order rotated; load average at start "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'system':<18} {'rounds':>6} {'TTFT ms':>9} {'min':>8} {'max':>8} {'decode tok/s':>12} {'prompt':>7} "
          f"{'new':>4} {'1st TTFT ms':>11} {'start s':>8}")
    for r in payload["results"]:
        tps = f"{r['decode_tps']:.1f}" if r["decode_tps"] is not None else "-"
        prompt = f"{r['prompt_tokens']:.0f}" if r["prompt_tokens"] is not None else "-"
        print(f"{r['system']:<18} {r['rounds']:>6} {r['ttft_ms']:>9.0f} {r['ttft_min_ms']:>8.0f} "
              f"{r['ttft_max_ms']:>8.0f} {tps:>12} {prompt:>7} {r['tokens']:>4.0f} {r['warm_up_ttft_ms']:>11.0f} "
              f"{r['start_s']:>8.1f}")
    labels = {"ttft_int8_vs_llama_server": "TTFT ours-int8 / llama-server",
              "ttft_int8_vs_llama_cpp_python": "TTFT ours-int8 / llama-cpp-python",
              "ttft_int8_vs_ours": "TTFT ours-int8 / ours", "decode_int8_vs_ours": "decode tok/s ours-int8 / ours"}
    for key, value in payload["ratios"].items():
        print(f"{labels[key]}: {f'{value:.2f}x' if value is not None else '- (a system is missing)'}")
    for name, why in payload["skipped"].items():
        print(f"skipped {name}: {why[-500:]}")
