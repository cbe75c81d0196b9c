"""The ``fim`` workload: editor completion, `qwen-stream serve` against llama-server, both on ``POST /infill``.

One user types a line into a 2 kB Python file. After one warm-up request (``n_predict: 0``, the file as it was
opened), every keystroke sends what llama.vscode sends: the lines above the cursor as ``input_prefix``, the line
typed so far as ``prompt``, the rest of the file as ``input_suffix``, and asks for exactly ``max_tokens`` (16)
greedy tokens. Successive prompts share everything up to the cursor, which each server's prompt cache should
serve; after the cursor they share the whole suffix (about 300 tokens, after ``<|fim_suffix|>``), one or two
positions further on, which only cache reuse serves (``--cache-reuse 256``, what llama.vim and llama.vscode tell
their users to start llama-server with). Three servers: ours (cache reuse on), llama-server without
``--cache-reuse`` and llama-server with it. The figure is the median wall time of a request as the client sees it;
the ratios are ours / each llama-server (below 1 is faster). The servers run side by side with one slot each and
take the keystrokes in turns (the order rotated every keystroke), so a busy machine slows all alike.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from qwen_stream.bench.config import BenchConfig
from qwen_stream.bench.server import HttpServerSystem, free_port, serve_command

# A 2 kB module; the cursor goes to the blank line in ``word_counts`` and the user types TYPED there.
FIM_SOURCE = '''"""Small statistics over text files: words, lines and the most common terms."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

WORD = re.compile(r"[A-Za-z']+")


@dataclass
class FileStats:
    path: Path
    lines: int
    words: int
    chars: int

    @property
    def words_per_line(self) -> float:
        return self.words / self.lines if self.lines else 0.0


def read_text(path: Path) -> str:
    """The file's text, with undecodable bytes replaced."""
    return path.read_text(encoding="utf-8", errors="replace")


def file_stats(path: Path) -> FileStats:
    text = read_text(path)
    return FileStats(path, text.count("\\n") + 1, len(WORD.findall(text)), len(text))


def word_counts(paths: list[Path], *, lower: bool = True) -> Counter[str]:
    """How often each word occurs across the files."""
    counts: Counter[str] = Counter()
    for path in paths:
        words = WORD.findall(read_text(path))

    return counts


def top_words(counts: Counter[str], n: int = 10, stop: frozenset[str] = frozenset()) -> list[tuple[str, int]]:
    """The n most common words that are not stop words."""
    kept = Counter({w: c for w, c in counts.items() if w not in stop})
    return kept.most_common(n)


def summary(paths: list[Path]) -> str:
    """One line per file, then the totals."""
    rows = []
    total_words = 0
    for path in sorted(paths):
        stats = file_stats(path)
        total_words += stats.words
        rows.append(f"{path.name}: {stats.lines} lines, {stats.words} words, {stats.words_per_line:.1f}/line")
    rows.append(f"total: {len(paths)} files, {total_words} words")
    return "\\n".join(rows)


def main(argv: list[str]) -> int:
    paths = [Path(a) for a in argv]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        print(f"not found: {', '.join(map(str, missing))}")
        return 1
    print(summary(paths))
    for word, count in top_words(word_counts(paths)):
        print(f"{word:>20} {count}")
    return 0
'''
CURSOR_AFTER = "        words = WORD.findall(read_text(path))\n"
TYPED = "        counts.update(w.lower() if lower else w for w in words)"
CONTEXT_LENGTH = 4096
CACHE_REUSE = 256  # the least run of cached tokens moved, for ours and the llama-server that reuses


def keystroke_bodies(max_tokens: int, keystrokes: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The warm-up body and one body per keystroke (the first ``keystrokes`` characters of TYPED, one by one)."""
    cut = FIM_SOURCE.index(CURSOR_AFTER) + len(CURSOR_AFTER)
    prefix, rest = FIM_SOURCE[:cut], FIM_SOURCE[cut:]
    suffix = rest[rest.index("\n"):]  # the blank line the user types into is replaced by what is typed

    def body(typed: str, n_predict: int) -> dict[str, Any]:
        return {"input_prefix": prefix, "input_suffix": suffix, "input_extra": [], "prompt": typed,
                "n_predict": n_predict, "temperature": 0.0, "top_k": 1, "ignore_eos": n_predict > 0,
                "cache_prompt": True, "stream": False}

    start = len("        ")  # the indentation is there when the user starts typing
    typed = [TYPED[:start + k] for k in range(1, min(keystrokes, len(TYPED) - start) + 1)]
    return body(TYPED[:start], 0), [body(t, max_tokens) for t in typed]


class InfillServer(HttpServerSystem):
    """A server answering ``/infill``: the command line is the subclass's; ``infill`` times one request."""

    def infill(self, body: dict[str, Any]) -> dict[str, Any]:
        with self.talking():
            started = time.perf_counter()
            response = self.client.post("/infill", json=body)
            wall_ms = (time.perf_counter() - started) * 1000
        if response.status_code != 200:
            raise RuntimeError(f"{self.name} answered {response.status_code}: {response.text[:300]}")
        data: dict[str, Any] = response.json()
        data["wall_ms"] = wall_ms
        return data


class OursInfill(InfillServer):
    name = "ours-server"

    def __init__(self, config: BenchConfig) -> None:
        port = free_port()
        command = serve_command(config, port, "--max-batch-size", "1", "--context-length", str(config.context_length),
                                "--cache-reuse", str(CACHE_REUSE))
        super().__init__(config, command, port)


class LlamaServerInfill(InfillServer):
    keepalive = False  # see LlamaServerSystem

    def __init__(self, config: BenchConfig, *, cache_reuse: int = 0) -> None:
        from qwen_stream.bench.llama_server import command_for

        self.name = f"llama-server+reuse{cache_reuse}" if cache_reuse else "llama-server"
        port = free_port()
        command = command_for(config, port, speculative=False)
        if cache_reuse:
            command += ["--cache-reuse", str(cache_reuse)]
        super().__init__(config, command, port)


@dataclass(slots=True)
class FimResult:
    system: str
    wall_ms: list[float] = field(default_factory=list)
    prompt_n: list[int] = field(default_factory=list)  # prompt tokens computed (not served from the cache)
    cache_n: list[int] = field(default_factory=list)
    predicted_n: list[int] = field(default_factory=list)
    warm_up_ms: float = 0.0

    def record(self, answer: dict[str, Any]) -> None:
        t = answer.get("timings") or {}
        self.wall_ms.append(float(answer["wall_ms"]))
        self.prompt_n.append(int(t.get("prompt_n", 0)))
        self.cache_n.append(int(t.get("cache_n", 0)))
        self.predicted_n.append(int(t.get("predicted_n", answer.get("tokens_predicted", 0))))

    def summary(self) -> dict[str, Any]:
        return {"system": self.system, "requests": len(self.wall_ms), "warm_up_ms": self.warm_up_ms,
                "median_ms": statistics.median(self.wall_ms), "min_ms": min(self.wall_ms),
                "max_ms": max(self.wall_ms), "median_prompt_n": statistics.median(self.prompt_n),
                "median_cache_n": statistics.median(self.cache_n),
                "median_predicted_n": statistics.median(self.predicted_n)}


def run_fim(config: BenchConfig, keystrokes: int) -> dict[str, Any]:
    """The three servers through the same keystrokes, in turns; returns per-system summaries and the two ratios."""
    warm, bodies = keystroke_bodies(config.max_tokens, keystrokes)
    servers: list[InfillServer] = []
    try:
        servers.append(OursInfill(config))
        servers.append(LlamaServerInfill(config))
        servers.append(LlamaServerInfill(config, cache_reuse=CACHE_REUSE))
        results = [FimResult(s.name) for s in servers]
        for server, result in zip(servers, results, strict=True):
            result.warm_up_ms = float(server.infill(warm)["wall_ms"])
        for k, body in enumerate(bodies):
            for j in range(len(servers)):  # each server goes first in turn
                i = (k + j) % len(servers)
                results[i].record(servers[i].infill(body))
    finally:
        for server in servers:
            server.close()
    ours, peer, peer_reuse = (r.summary() for r in results)
    return {"workload": "fim", "model": config.model, "max_tokens": config.max_tokens,
            "context_length": config.context_length, "file_bytes": len(FIM_SOURCE.encode()),
            "cache_reuse": CACHE_REUSE, "results": [ours, peer, peer_reuse],
            "median_ratio": ours["median_ms"] / peer["median_ms"],
            "median_ratio_reuse": ours["median_ms"] / peer_reuse["median_ms"]}


def print_fim(payload: dict[str, Any]) -> None:
    print(f"fim workload: {payload['model'] or 'default model'}, {payload['file_bytes']} B file, "
          f"{payload['max_tokens']} tokens per completion, /infill, after one warm-up")
    print(f"{'system':<22} {'requests':>8} {'median ms':>10} {'min ms':>8} {'max ms':>8} {'prompt_n':>9} "
          f"{'cache_n':>8} {'predicted':>9} {'warm-up ms':>11}")
    for r in payload["results"]:
        print(f"{r['system']:<22} {r['requests']:>8} {r['median_ms']:>10.1f} {r['min_ms']:>8.1f} {r['max_ms']:>8.1f} "
              f"{r['median_prompt_n']:>9.0f} {r['median_cache_n']:>8.0f} {r['median_predicted_n']:>9.0f} "
              f"{r['warm_up_ms']:>11.1f}")
    reuse = payload["cache_reuse"]
    print(f"median latency ours / llama-server: {payload['median_ratio']:.2f}x (<= 0.7 is the target); "
          f"ours / llama-server --cache-reuse {reuse}: {payload['median_ratio_reuse']:.2f}x (<= 1.0)")
