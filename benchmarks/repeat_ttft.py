"""The same request again (a retry, Regenerate, n > 1 one after another): time to first token, cold and repeated,
ours (`qwen-stream serve`) against llama-server on the same GGUF, both over HTTP, in turns (issue 26).

Each round sends a new prompt (a fresh nonce: cold for both servers), then the very same request again, seeded and
sampled (temperature 0.7), streamed through /v1/chat/completions; TTFT is the first content chunk. It also checks
that our repeat gives the cold answer's text (the same seed from the kept logits row).

    LLAMA_SERVER=/path/to/llama-server python benchmarks/repeat_ttft.py --model qwen2.5-coder-1.5b --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx

QUESTION = ("Here is a module under review (nonce {nonce}).\n\n" + "\n".join(
    f"def step_{i}(values: list[int]) -> int:\n    return sum(v * {i} for v in values if v % {i + 2})\n"
    for i in range(12)) + "\nSummarise what these functions do in one sentence.")


def start(command: list[str], url: str) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit(f"{command[0]} exited with {proc.returncode}")
        time.sleep(0.5)
    raise SystemExit(f"{command[0]} did not become ready")


def ask(url: str, model: str, nonce: int, seed: int) -> tuple[float, str]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": QUESTION.format(nonce=nonce)}],
                            "temperature": 0.7, "seed": seed, "max_tokens": 24, "stream": True}
    started, first, text = time.perf_counter(), None, ""
    with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=600) as response:
        if response.status_code != 200:
            raise SystemExit(f"{url}: {response.status_code} {response.read().decode()[:300]}")
        for line in response.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for choice in json.loads(line[6:]).get("choices", []):
                delta = choice.get("delta", {}).get("content") or ""
                if delta and first is None:
                    first = time.perf_counter() - started
                text += delta
    return first if first is not None else float("nan"), text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from qwen_stream.models.registry import ensure_alias

    gguf = ensure_alias(args.model, progress=True)  # the alias's GGUF file
    servers = {"ours": ([sys.executable, "-m", "qwen_stream.cli.main", "serve", "--model", args.model, "--port",
                         "18431", "--max-batch-size", "2", "--log-level", "warning"], "http://127.0.0.1:18431")}
    binary = os.environ.get("LLAMA_SERVER")
    if binary:
        servers["llama-server"] = ([binary, "-m", str(gguf), "--port", "18432", "-np", "2", "-c", "8192", "-t",
                                    str(os.cpu_count() or 2), "--log-disable"], "http://127.0.0.1:18432")
    procs = []
    try:
        for name, (command, url) in servers.items():
            print(f"starting {name}...", flush=True)
            procs.append(start(command, url))
        cold: dict[str, list[float]] = {name: [] for name in servers}
        repeat: dict[str, list[float]] = {name: [] for name in servers}
        same = 0
        for r in range(args.rounds):
            order = list(servers) if r % 2 == 0 else list(reversed(servers))
            for name in order:
                url = servers[name][1]
                first_ttft, first_text = ask(url, args.model, nonce=1000 + r, seed=r)
                again_ttft, again_text = ask(url, args.model, nonce=1000 + r, seed=r)
                cold[name].append(first_ttft)
                repeat[name].append(again_ttft)
                same += name == "ours" and again_text == first_text
                print(f"round {r + 1} {name}: cold {first_ttft:.3f} s, repeat {again_ttft:.3f} s, same text "
                      f"{again_text == first_text}", flush=True)
        for name in servers:
            print(f"{name}: median TTFT cold {statistics.median(cold[name]):.3f} s, repeat "
                  f"{statistics.median(repeat[name]):.3f} s")
        if "llama-server" in servers:
            ratio = statistics.median(repeat["ours"]) / statistics.median(repeat["llama-server"])
            print(f"repeat TTFT ours / llama-server: {ratio:.2f}x")
        print(f"ours: the repeat gave the cold answer's text in {same} of {args.rounds} rounds")
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)


if __name__ == "__main__":
    main()
