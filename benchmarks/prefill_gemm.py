"""How fast this CPU multiplies one prefill chunk by one MLP weight (issue 26, "prefill at the GEMM's speed").

A 512-token chunk times Qwen2.5-Coder-1.5B's up-projection (1536 x 8960), through each kernel torch offers here:
int8 ``torch._int_mm``, float32, bfloat16, and fbgemm/oneDNN dynamic int8 (``quantize_dynamic``, what the PyTorch
runner's ``--quantize int8`` uses). Compare with llama.cpp's prefill: the 1.5B's ~2.6 GFLOP a token times its
measured prompt tokens per second (docs/performance.md). Which kernel wins depends on the CPU (AVX2, AVX-512 VNNI,
AMX): run it where you decide.

    python benchmarks/prefill_gemm.py --threads 2
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections.abc import Callable

import torch

M, K, N = 512, 1536, 8960  # chunk tokens, hidden width, MLP width


def rate(fn: Callable[[], object], seconds: float) -> float:
    """Multiply-adds x 2 per second over ``seconds`` of repeated calls (after one warm-up call)."""
    fn()
    started, calls = time.perf_counter(), 0
    while time.perf_counter() - started < seconds:
        fn()
        calls += 1
    return 2 * M * K * N * calls / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--seconds", type=float, default=3.0, help="per kernel (default 3)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    a8, b8 = torch.randint(-128, 127, (M, K), dtype=torch.int8), torch.randint(-128, 127, (K, N), dtype=torch.int8)
    af, bf = torch.randn(M, K), torch.randn(K, N)
    ah, bh = af.bfloat16(), bf.bfloat16()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # quantize_dynamic's move to torchao
        dynamic = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(torch.nn.Linear(K, N)),
                                                          {torch.nn.Linear}, dtype=torch.qint8)
    kernels: dict[str, Callable[[], object]] = {
        "int8 torch._int_mm": lambda: torch._int_mm(a8, b8),
        "float32 matmul": lambda: af @ bf,
        "bfloat16 matmul": lambda: ah @ bh,
        "dynamic int8 (quantize_dynamic)": lambda: dynamic(af),
    }
    print(f"{M} x {K} by {K} x {N}, {args.threads} threads")
    for name, fn in kernels.items():
        print(f"  {name:32s} {rate(fn, args.seconds) / 1e9:7.0f} GOP/s", flush=True)


if __name__ == "__main__":
    main()
