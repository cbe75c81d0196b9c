"""N concurrent streams greedy against Qwen's default sampling, and llama-server with the same sampling, one run.

    LLAMA_SERVER=.../llama-server python benchmarks/sampling_streams.py --model smollm2-135m --streams 16 --rounds 2

One engine (llama.cpp runner, N slots, N x context KV, no speculation so only sampling differs) answers the bench's
N "free" prompts at once, of forced length, greedy and then with Qwen's defaults (bench/sampling.py: temperature
0.7, top_p 0.8, top_k 20, repetition penalty 1.05 over prompt + output, a seed per prompt); llama-server (if found)
answers them with the same sampling (its penalty window widened to the whole context). The three alternate round by
round, so a shared machine's drift hits all of them. Prints each round's wall time, the engine's sampling share of
a step, and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict

from qwen_stream.api import ChatModel
from qwen_stream.bench import sampling
from qwen_stream.bench.config import BenchConfig
from qwen_stream.bench.llama_server import LlamaServerSystem, find_llama_server
from qwen_stream.bench.metrics import StreamTrace
from qwen_stream.bench.workloads import prompt_messages


def concurrently(serve: Callable[[list[dict[str, str]]], None], streams: int) -> float:
    threads = [threading.Thread(target=serve, args=(m,)) for m in prompt_messages(streams, "free")]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def ours_round(model: ChatModel, name: str, args: argparse.Namespace) -> tuple[float, float]:
    """(wall seconds, share of engine step time spent sampling) for one round."""
    model.engine.reset_prefix_cache()
    before = asdict(model.engine.core.timings)

    def serve(messages: list[dict[str, str]]) -> None:
        for _ in model.stream(messages=messages, max_new_tokens=args.max_tokens, ignore_eos=True,
                              **sampling.ours(name, messages)):
            pass

    seconds = concurrently(serve, args.streams)
    after = asdict(model.engine.core.timings)
    return seconds, (after["sample_s"] - before["sample_s"]) / max(1e-9, after["total_s"] - before["total_s"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--context-length", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"loading {args.model} ...", file=sys.stderr, flush=True)
    model = ChatModel.load(args.model, runner="llamacpp", max_batch_size=args.streams,
                           context_length=args.context_length, kv_budget=args.streams * args.context_length,
                           speculate=False, progress=False)
    peer = _llama_server(args)
    times: dict[str, list[float]] = {"ours greedy": [], "ours qwen": [], "llama-server qwen": []}
    try:
        for r in range(args.rounds):
            for name in ("greedy", "qwen"):
                seconds, share = ours_round(model, name, args)
                times[f"ours {name}"].append(seconds)
                print(f"round {r + 1}, ours {name}: {seconds:.1f} s, sampling {100 * share:.1f}% of engine steps",
                      flush=True)
            if peer is not None:
                peer.reset_cache()
                seconds = concurrently(lambda m: peer.serve(m, StreamTrace(submitted=time.perf_counter())),
                                       args.streams)
                times["llama-server qwen"].append(seconds)
                print(f"round {r + 1}, llama-server qwen: {seconds:.1f} s", flush=True)
    finally:
        model.close()
        if peer is not None:
            peer.close()
    _ratios({name: statistics.median(t) for name, t in times.items() if t}, args)


def _llama_server(args: argparse.Namespace) -> LlamaServerSystem | None:
    if find_llama_server() is None:
        print("llama-server not found (LLAMA_SERVER): ours only", file=sys.stderr)
        return None
    config = BenchConfig(model=args.model, max_tokens=args.max_tokens, threads=None, max_batch_size=args.streams,
                         context_length=args.context_length, sampling="qwen")
    return LlamaServerSystem(config, speculative=False)


def _ratios(median: dict[str, float], args: argparse.Namespace) -> None:
    tokens = args.streams * args.max_tokens
    for name, seconds in median.items():
        print(f"{name}: {tokens / seconds:.1f} tok/s (median wall {seconds:.1f} s)")
    print(f"ours qwen / ours greedy: {median['ours greedy'] / median['ours qwen']:.2f}x")
    if "llama-server qwen" in median:
        print(f"ours qwen / llama-server qwen: {median['llama-server qwen'] / median['ours qwen']:.2f}x")


if __name__ == "__main__":
    main()
