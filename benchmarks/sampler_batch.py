"""The sampler alone: one step of R rows x V logits, the per-row path against the batched one, in one run.

The per-row path is ``sample_row`` once per row (what every sampled or penalised batch took before batching:
several full-vocabulary passes and host reads per row); the batched path is ``sample_rows`` (engine/sample/batched.py).
Both see the same logits and states; rounds alternate so drift in a shared machine's speed hits both alike.
Torch on one thread, as the llama.cpp runner leaves it. Run:

    python benchmarks/sampler_batch.py --rows 16 --vocab 151936 --rounds 30
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from qwen_stream.engine.sample.per_sequence import SamplingState, sample_row
from qwen_stream.engine.sample.step_rows import SampleRow, sample_rows
from qwen_stream.types import SamplingParams

SETTINGS = {
    "qwen": SamplingParams(temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05),
    "greedy": SamplingParams(temperature=0.0),
    "top_p": SamplingParams(temperature=0.7, top_p=0.95),
    "temperature": SamplingParams(temperature=0.8),
}


def states(params: SamplingParams, rows: int, vocab: int, history: int) -> list[SamplingState]:
    """Rows with a prompt of ``history`` tokens and as many generated ones, as a chat a while into its answer."""
    made = []
    for r in range(rows):
        g = torch.Generator().manual_seed(r)
        st = SamplingState.create(params.with_(seed=r), torch.randint(0, vocab, (history,), generator=g).tolist(),
                                  vocab)
        for token in torch.randint(0, vocab, (history,), generator=g).tolist():
            st.record(token)
        made.append(st)
    return made


def per_row(logits: torch.Tensor, sts: list[SamplingState]) -> list[int]:
    return [sample_row(logits[i], st) for i, st in enumerate(sts)]


def batched(logits: torch.Tensor, sts: list[SamplingState]) -> list[int | Exception]:
    return sample_rows(logits, [SampleRow(st, seed=7) for st in sts])


def time_ms(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return 1e3 * (time.perf_counter() - started)


def compare(name: str, params: SamplingParams, args: argparse.Namespace) -> None:
    torch.manual_seed(0)
    logits = torch.randn(args.rows, args.vocab) * 3  # roughly a model's spread of scores
    sts = states(params, args.rows, args.vocab, args.history)
    a, b = [], []
    for _ in range(args.rounds):  # alternating
        a.append(time_ms(lambda: per_row(logits, sts)))
        b.append(time_ms(lambda: batched(logits, sts)))
    pa, pb = statistics.median(a), statistics.median(b)
    print(f"{name:12s} per-row {pa:8.2f} ms   batched {pb:7.2f} ms   per-row / batched {pa / pb:5.1f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=16)
    parser.add_argument("--vocab", type=int, default=151_936)
    parser.add_argument("--history", type=int, default=200, help="prompt tokens, and as many generated, per row")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--settings", default=",".join(SETTINGS), help=f"comma separated, from {', '.join(SETTINGS)}")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{args.rows} rows x {args.vocab} vocabulary, {args.history}+{args.history} history tokens per row, "
          f"median of {args.rounds}, torch {torch.__version__} on 1 thread")
    for name in args.settings.split(","):
        compare(name, SETTINGS[name], args)


if __name__ == "__main__":
    main()
