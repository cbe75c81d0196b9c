"""Does the logits row after a prompt depend on how the prompt was cut into prefill chunks? (issue 26)

Prefills one prompt on the llama.cpp runner with chunks cut at every multiple of 256, then with other cuts, and
prints the largest difference of the last row from the first. Bit-equal rows under some cut rule are what a
prefix cache needs for "same seed, same text, whatever the cache holds".

    python benchmarks/chunk_invariance.py --model smollm2-135m --tokens 700
"""

from __future__ import annotations

import argparse
import itertools


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=700)
    args = parser.parse_args()

    from qwen_stream.engine.runners.base import SeqChunk
    from qwen_stream.engine.runners.llamacpp import LlamaCppRunner
    from qwen_stream.models.registry import ensure_alias

    n = args.tokens
    runner = LlamaCppRunner(ensure_alias(args.model, progress=True), max_slots=1, max_seq_len=n + 16)
    prompt = [(1000 + 37 * i) % 5000 + 100 for i in range(n)]

    def last_row(cuts: list[int]) -> object:
        runner.free_slot(0)
        bounds = [0, *sorted(set(cuts)), n]
        rows = None
        for start, end in itertools.pairwise(bounds):
            rows = runner.forward([SeqChunk(0, prompt[start:end], start, want_logits=end == n)])
        return rows[-1].float().clone()  # type: ignore[index]

    grid = list(range(256, n, 256))
    reference = last_row(grid)
    trials = {"one chunk": [], "+ a cut at 3": [3, *grid], "+ a cut at 100": [100, *grid],
              "+ a cut at 255": [255, *grid], "chunks of 64": list(range(64, n, 64)),
              "chunks of 16": list(range(16, n, 16)), "+ a last piece of 2": [*grid, n - 2],
              "+ a last piece of 1": [*grid, n - 1]}
    print(f"{args.model}, {n} tokens; reference: chunks cut at every multiple of 256")
    for label, cuts in trials.items():
        diff = (last_row([c for c in cuts if 0 < c < n]) - reference).abs().max().item()  # type: ignore[operator]
        print(f"  {label:22s} largest difference of the last row: {diff:.3g}")


if __name__ == "__main__":
    main()
