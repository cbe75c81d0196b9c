"""Raw single-stream speed: LlamaCppRunner (prefill, then greedy argmax steps) vs llama-cpp-python's Llama.generate.

Same GGUF, same prompt token ids, same threads, greedy, forced length; runs alternate so machine drift hits both.
Besides wall-clock figures it prints the process CPU time per decoded token, which stays meaningful when other
work shares the cores (compare those with --threads 1).

    python benchmarks/runner_vs_llama_cpp_python.py --model smollm2-135m --tokens 128 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path
from typing import Any

PROMPT = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
          "Write a long story about a lighthouse keeper who finds a message in a bottle.<|im_end|>\n"
          "<|im_start|>assistant\n")


Result = tuple[float, float, float, list[int]]  # TTFT s, decode tok/s, CPU ms per decoded token, tokens


def ours(runner: Any, prompt: list[int], n: int) -> Result:
    """One greedy stream on slot 0."""
    from qwen_stream.engine.runners.base import SeqChunk

    runner.free_slot(0)
    start = time.perf_counter()
    out = [int(runner.forward([SeqChunk(0, prompt, 0)])[0].argmax())]
    first, cpu = time.perf_counter(), time.process_time()
    while len(out) < n:
        logits = runner.forward([SeqChunk(0, [out[-1]], len(prompt) + len(out) - 1)])
        out.append(int(logits[0].argmax()))
    end = time.perf_counter()
    return first - start, (n - 1) / (end - first), 1000 * (time.process_time() - cpu) / (n - 1), out


def reference(llm: Any, prompt: list[int], n: int) -> Result:
    llm.reset()
    out: list[int] = []
    start = time.perf_counter()
    first, cpu = start, time.process_time()
    for token in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
        out.append(int(token))
        if len(out) == 1:
            first, cpu = time.perf_counter(), time.process_time()
        if len(out) == n:
            break
    end = time.perf_counter()
    return first - start, (n - 1) / (end - first), 1000 * (time.process_time() - cpu) / (n - 1), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="alias or .gguf path")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    from qwen_stream.bench.reference_llama import open_reference_llama
    from qwen_stream.engine.runners.llamacpp import LlamaCppRunner, physical_cores
    from qwen_stream.models.registry import ensure_alias, is_alias

    path = ensure_alias(args.model) if is_alias(args.model) else Path(args.model)
    threads = args.threads or physical_cores()
    runner = LlamaCppRunner(path, max_slots=1, max_seq_len=1024, threads=threads)
    llm = open_reference_llama(path, n_ctx=1024, n_threads=threads, n_threads_batch=threads, verbose=False)
    prompt = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
    ours(runner, prompt, 4), reference(llm, prompt, 4)  # warm-up
    rows: dict[str, list[tuple[float, float, float]]] = {"ours": [], "llama-cpp-python": []}
    for _ in range(args.repeats):
        *a, a_ids = ours(runner, prompt, args.tokens)
        *b, b_ids = reference(llm, prompt, args.tokens)
        rows["ours"].append((a[0], a[1], a[2]))
        rows["llama-cpp-python"].append((b[0], b[1], b[2]))
        same = next((i for i, (x, y) in enumerate(zip(a_ids, b_ids, strict=True)) if x != y), args.tokens)
        print(f"ours {a[1]:6.1f} tok/s TTFT {a[0] * 1e3:6.1f} ms {a[2]:5.1f} CPU ms/tok | llama-cpp-python "
              f"{b[1]:6.1f} tok/s TTFT {b[0] * 1e3:6.1f} ms {b[2]:5.1f} CPU ms/tok | same first {same} tokens")
    med = {k: [statistics.median(r[i] for r in v) for i in range(3)] for k, v in rows.items()}
    (ot, os_, oc), (rt, rs, rc) = med["ours"], med["llama-cpp-python"]
    print(f"median over {args.repeats}, {len(prompt)} prompt tokens, {args.tokens} new, {threads} threads:")
    print(f"  ours             decode {os_:6.1f} tok/s  TTFT {ot * 1e3:6.1f} ms  {oc:5.2f} CPU ms/token")
    print(f"  llama-cpp-python decode {rs:6.1f} tok/s  TTFT {rt * 1e3:6.1f} ms  {rc:5.2f} CPU ms/token")
    print(f"  ratio            decode {os_ / rs:5.3f}x       TTFT {ot / rt:5.3f}x  CPU per token {oc / rc:5.3f}x")
    runner.close()
    llm.close()


if __name__ == "__main__":
    main()
