"""What our layer costs on top of vLLM: `qwen-stream serve --backend vllm` against vLLM's own OpenAI server, and
our native server beside them, measured in alternating rounds so that a busy machine's drift hits every system alike.

    .venv-vllm/bin/python benchmarks/vllm_overhead.py --model smollm2-135m --rounds 3 --concurrency 1,16

All servers run at once (each started and warmed first), then each round serves every concurrency level on each
system in turn, in A B C / C B A order. Reported: per system and level, the median over rounds of decode tok/s
(one stream), aggregate tok/s and TTFT p50, and ours-vllm / vllm-serve ratios. Same clients as `qwen-stream bench`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from typing import Any

SYSTEMS = ("vllm-serve", "ours-vllm", "ours-server")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--which", default=",".join(SYSTEMS), help=f"comma separated, from {', '.join(SYSTEMS)}")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", default="1,16")
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--dtype", default="bfloat16", help="for the vLLM systems (default: bfloat16)")
    parser.add_argument("--context-length", type=int, default=1024)
    args = parser.parse_args()

    from qwen_stream.bench.config import BenchConfig
    from qwen_stream.bench.harness import bench_system
    from qwen_stream.bench.systems import make_system

    levels = sorted({int(n) for n in args.concurrency.split(",")})
    names = [n for n in args.which.split(",") if n]
    config = BenchConfig(model=args.model, max_tokens=args.max_tokens, threads=None, max_batch_size=max(levels),
                         context_length=args.context_length, dtype=args.dtype, prefix_cache=False)
    systems: dict[str, Any] = {}
    try:
        for name in names:
            print(f"starting {name} ...", file=sys.stderr, flush=True)
            systems[name] = make_server(name, config, make_system)
        figures: dict[tuple[str, int], list[tuple[float, float, float]]] = {}
        for round_index in range(args.rounds):
            order = names if round_index % 2 == 0 else names[::-1]
            for name in order:
                for result in bench_system(systems[name], levels, lambda: None, single_repeats=2):
                    s = result.summary
                    figures.setdefault((name, s.concurrency), []).append((s.decode_tps, s.aggregate_tps,
                                                                          s.ttft_p50_s))
                    print(f"round {round_index + 1}: {name} x{s.concurrency}: decode {s.decode_tps:.1f} tok/s, "
                          f"aggregate {s.aggregate_tps:.1f} tok/s, TTFT p50 {s.ttft_p50_s:.3f} s", flush=True)
        report(figures, names, levels)
    finally:
        for system in systems.values():
            system.close()
    return 0


def make_server(name: str, config: Any, make_system: Any) -> Any:
    if name == "ours-server":
        from qwen_stream.bench.server import ServerSystem

        return ServerSystem(config)
    return make_system(name, config)


def report(figures: dict[tuple[str, int], list[tuple[float, float, float]]], names: list[str],
           levels: list[int]) -> None:
    medians = {key: tuple(statistics.median(v[i] for v in values) for i in range(3))
               for key, values in figures.items()}
    print("| system | streams | decode tok/s | aggregate tok/s | TTFT p50 s | rounds |")
    print("|---|---|---|---|---|---|")
    for name in names:
        for n in levels:
            decode, aggregate, ttft = medians[(name, n)]
            print(f"| {name} | {n} | {decode:.1f} | {aggregate:.1f} | {ttft:.3f} | {len(figures[(name, n)])} |")
    if "ours-vllm" in names and "vllm-serve" in names:
        for n in levels:
            ours, peer = medians[("ours-vllm", n)], medians[("vllm-serve", n)]
            print(f"ours-vllm / vllm-serve at {n} streams: aggregate tok/s x{ours[1] / peer[1]:.2f}, "
                  f"decode tok/s x{ours[0] / peer[0]:.2f}, TTFT p50 x{ours[2] / peer[2]:.2f}")


if __name__ == "__main__":
    sys.exit(main())
