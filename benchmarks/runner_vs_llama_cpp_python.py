"""Raw single-stream speed: LlamaCppRunner (prefill, then greedy argmax steps) vs llama-cpp-python's Llama.generate.

Same GGUF, same prompt token ids, same threads, greedy, forced length; runs alternate so machine drift hits both.

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


def ours(runner: Any, prompt: list[int], n: int) -> tuple[float, float, list[int]]:
    """(TTFT s, decode tok/s, tokens) for one greedy stream on slot 0."""
    from qwen_stream.engine.runner import SeqChunk

    runner.free_slot(0)
    start = time.perf_counter()
    out = [int(runner.forward([SeqChunk(0, prompt, 0)])[0].argmax())]
    first = time.perf_counter()
    while len(out) < n:
        logits = runner.forward([SeqChunk(0, [out[-1]], len(prompt) + len(out) - 1)])
        out.append(int(logits[0].argmax()))
    end = time.perf_counter()
    return first - start, (n - 1) / (end - first), out


def reference(llm: Any, prompt: list[int], n: int) -> tuple[float, float, list[int]]:
    llm.reset()
    out: list[int] = []
    start = time.perf_counter()
    first = start
    for token in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
        out.append(int(token))
        if len(out) == 1:
            first = time.perf_counter()
        if len(out) == n:
            break
    end = time.perf_counter()
    return first - start, (n - 1) / (end - first), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m", help="alias or .gguf path")
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()

    import llama_cpp

    from qwen_stream.engine.llamacpp_runner import LlamaCppRunner, physical_cores
    from qwen_stream.models.registry import ensure_alias, is_alias

    path = ensure_alias(args.model) if is_alias(args.model) else Path(args.model)
    threads = args.threads or physical_cores()
    runner = LlamaCppRunner(path, max_slots=1, max_seq_len=1024, threads=threads)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=1024, n_threads=threads, n_threads_batch=threads,
                          verbose=False)
    prompt = llm.tokenize(PROMPT.encode(), add_bos=False, special=True)
    ours(runner, prompt, 4), reference(llm, prompt, 4)  # warm-up
    rows: dict[str, list[tuple[float, float]]] = {"ours": [], "llama-cpp-python": []}
    for _ in range(args.repeats):
        a_ttft, a_tps, a_ids = ours(runner, prompt, args.tokens)
        b_ttft, b_tps, b_ids = reference(llm, prompt, args.tokens)
        rows["ours"].append((a_ttft, a_tps))
        rows["llama-cpp-python"].append((b_ttft, b_tps))
        same = sum(x == y for x, y in zip(a_ids, b_ids, strict=True))
        print(f"ours {a_tps:6.1f} tok/s TTFT {a_ttft * 1e3:6.1f} ms | llama-cpp-python {b_tps:6.1f} tok/s "
              f"TTFT {b_ttft * 1e3:6.1f} ms | same tokens {same}/{args.tokens}")
    med = {k: (statistics.median(t for t, _ in v), statistics.median(s for _, s in v)) for k, v in rows.items()}
    (ot, os_), (rt, rs) = med["ours"], med["llama-cpp-python"]
    print(f"median over {args.repeats}, {len(prompt)} prompt tokens, {args.tokens} new, {threads} threads:")
    print(f"  ours             decode {os_:6.1f} tok/s  TTFT {ot * 1e3:6.1f} ms")
    print(f"  llama-cpp-python decode {rs:6.1f} tok/s  TTFT {rt * 1e3:6.1f} ms")
    print(f"  ratio            decode {os_ / rs:5.3f}x       TTFT {ot / rt:5.3f}x")
    runner.close()
    llm.close()


if __name__ == "__main__":
    main()
