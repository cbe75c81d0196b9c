"""Soak: N streaming clients for T minutes against `qwen-stream serve`, with a report (issue 10).

Each client loops: a streamed chat completion (varied prompt, length and seed), read to its end. Meanwhile the
server's RSS and the latency of GET /health are sampled every second. The report gives requests, errors by kind
(HTTP status, transport error, an error frame, a stream without [DONE]), RSS over time, TTFT p50/p95/max, the
tokens per second of all clients together and the worst /health latency.

    python benchmarks/soak.py --model smollm2-135m --runner torch --clients 64 --minutes 10 --out soak.json
    python benchmarks/soak.py --url http://127.0.0.1:8000 --clients 8 --minutes 1     # a server already running
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import psutil

TOPICS = ["the sea", "a lost key", "robots", "a dragon", "the moon", "coffee", "a library", "winter", "trains",
          "a garden", "music", "an old map", "rain", "a lighthouse", "mountains", "a cat", "紅茶", "宇宙"]


@dataclass
class Tally:
    requests: int = 0
    ok: int = 0
    tokens: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    ttft: list[float] = field(default_factory=list)
    rss: list[tuple[float, float]] = field(default_factory=list)  # (seconds since start, MB)
    health: list[float] = field(default_factory=list)
    health_bad: int = 0


async def one_request(http: httpx.AsyncClient, rng: random.Random, tally: Tally) -> None:
    body = {"messages": [{"role": "user", "content": f"Tell me a short story about {rng.choice(TOPICS)}."}],
            "max_tokens": rng.randint(16, 128), "temperature": 0.7, "seed": rng.randint(0, 2**31),
            "stream": True, "stream_options": {"include_usage": True}}
    tally.requests += 1
    started = time.perf_counter()
    first: float | None = None
    done = False
    try:
        async with http.stream("POST", "/v1/chat/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                tally.errors[f"http {response.status_code}"] += 1
                return
            async for line in response.aiter_lines():
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    done = True
                    break
                chunk = json.loads(line[6:])
                if "error" in chunk:
                    tally.errors["error frame"] += 1
                    return
                if first is None and any(c.get("delta", {}).get("content") for c in chunk.get("choices", [])):
                    first = time.perf_counter() - started
                if chunk.get("usage"):
                    tally.tokens += chunk["usage"]["completion_tokens"]
    except httpx.HTTPError as exc:
        tally.errors[f"transport {type(exc).__name__}"] += 1
        return
    if not done:
        tally.errors["no [DONE]"] += 1
        return
    tally.ok += 1
    if first is not None:
        tally.ttft.append(first)


async def client(url: str, index: int, deadline: float, tally: Tally) -> None:
    rng = random.Random(index)
    async with httpx.AsyncClient(base_url=url, timeout=600) as http:
        while time.monotonic() < deadline:
            await one_request(http, rng, tally)


async def monitor(url: str, pid: int | None, start: float, deadline: float, tally: Tally) -> None:
    process = psutil.Process(pid) if pid else None
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        while time.monotonic() < deadline:
            began = time.perf_counter()
            try:
                response = await http.get("/health")
                tally.health_bad += response.status_code != 200
            except httpx.HTTPError:
                tally.health_bad += 1
            tally.health.append(time.perf_counter() - began)
            if process is not None:
                tally.rss.append((time.monotonic() - start, process.memory_info().rss / 2**20))
            await asyncio.sleep(max(0.0, 1.0 - (time.perf_counter() - began)))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(tally: Tally, args: argparse.Namespace, seconds: float) -> dict[str, Any]:
    rss = [mb for _, mb in tally.rss]
    warm = [mb for t, mb in tally.rss if t >= 60] or rss  # growth measured after the first minute's warm-up
    minutes = {int(t // 60): mb for t, mb in tally.rss}  # the last sample of each minute
    return {
        "clients": args.clients, "minutes": args.minutes, "seconds": round(seconds, 1),
        "requests": tally.requests, "ok": tally.ok, "errors": dict(tally.errors),
        "ttft_s": {"p50": percentile(tally.ttft, 0.5), "p95": percentile(tally.ttft, 0.95),
                   "max": max(tally.ttft, default=float("nan"))},
        "tokens": tally.tokens, "tokens_per_s": round(tally.tokens / seconds, 1),
        "rss_mb": {"first": rss[0] if rss else None, "after_warmup": warm[0] if warm else None,
                   "last": rss[-1] if rss else None, "max": max(rss, default=None),
                   "growth_after_warmup_pct": round(100 * (warm[-1] - warm[0]) / warm[0], 2) if warm else None,
                   "per_minute": {str(k): round(v, 1) for k, v in sorted(minutes.items())}},
        "health": {"samples": len(tally.health), "not_200": tally.health_bad,
                   "worst_s": round(max(tally.health, default=0.0), 3),
                   "p99_s": round(percentile(tally.health, 0.99), 3)},
        "load_avg_at_end": os.getloadavg(),
    }


def start_server(args: argparse.Namespace) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "qwen_stream.cli.main", "serve", "--model", args.model, "--runner", args.runner,
           "--port", str(port), "--log-level", "warning", "--max-batch-size", str(args.max_batch_size)]
    proc = subprocess.Popen(cmd)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not become ready in 10 minutes")


async def soak(url: str, pid: int | None, args: argparse.Namespace) -> dict[str, Any]:
    tally = Tally()
    start = time.monotonic()
    deadline = start + 60 * args.minutes
    clients = [asyncio.ensure_future(client(url, i, deadline, tally)) for i in range(args.clients)]
    await asyncio.gather(monitor(url, pid, start, deadline, tally), progress(start, deadline, tally))
    for task in clients:  # requests still running at the deadline are cut: counted apart, not as errors
        task.cancel()
    cut = sum(isinstance(r, asyncio.CancelledError) for r in await asyncio.gather(*clients, return_exceptions=True))
    result = report(tally, args, time.monotonic() - start)
    result["cut_at_deadline"] = cut
    result["requests"] -= cut
    return result


async def progress(start: float, deadline: float, tally: Tally) -> None:
    while time.monotonic() < deadline:
        await asyncio.sleep(30)
        rss = f", RSS {tally.rss[-1][1]:.0f} MB" if tally.rss else ""
        print(f"[{time.monotonic() - start:5.0f} s] {tally.requests} requests, {tally.ok} ok, "
              f"{sum(tally.errors.values())} errors, worst /health {max(tally.health, default=0):.2f} s{rss}",
              file=sys.stderr, flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a running server (else one is started with --model)")
    parser.add_argument("--pid", type=int, help="the running server's pid, for RSS (with --url)")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--runner", default="auto")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", help="write the report as JSON here too")
    args = parser.parse_args()
    proc = None
    url, pid = args.url, args.pid
    if url is None:
        proc, url = start_server(args)
        pid = proc.pid
    try:
        result = asyncio.run(soak(url, pid, args))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(60)
    print(json.dumps(result, indent=2))
    if args.out:
        with open(args.out, "w") as handle:
            json.dump(result, handle, indent=2)
    ttft = result["ttft_s"]
    print(f"{result['requests']} requests, {result['ok']} ok, errors {result['errors'] or 'none'}; TTFT p50 "
          f"{ttft['p50']:.2f} s p95 {ttft['p95']:.2f} s max {ttft['max']:.2f} s; {result['tokens_per_s']} tok/s; "
          f"RSS growth after warm-up {result['rss_mb']['growth_after_warmup_pct']}%; worst /health "
          f"{result['health']['worst_s']} s", file=sys.stderr)


if __name__ == "__main__":
    main()
