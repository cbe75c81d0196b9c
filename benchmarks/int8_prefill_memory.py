"""What the fast prefill's int8 copy costs in memory and start-up time (issue 26).

Opens the model on the llama.cpp runner, then builds (first time) or loads (later times) its int8 prefill, and
prints the RSS the copy keeps, the peak RSS of the process, and how long it took. Run it twice: the first run
builds the copy and saves it beside the converted checkpoint, the second loads that file.

    python benchmarks/int8_prefill_memory.py --model qwen2.5-coder-1.5b
"""

from __future__ import annotations

import argparse
import gc
import resource
import time


def rss_gb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS")) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    args = parser.parse_args()
    from qwen_stream.engine.runners.int8_prefill import build_int8_prefill, cached_path
    from qwen_stream.engine.runners.llamacpp import LlamaCppRunner
    from qwen_stream.models import sources

    source = sources.resolve_source(args.model)
    runner = LlamaCppRunner(source.path, max_slots=4, max_seq_len=4096, kv_budget=16384)
    gc.collect()
    before = rss_gb()
    saved = cached_path(source).is_file()
    print(f"llama.cpp runner: {before:.2f} GB; {'loading the saved' if saved else 'building the'} int8 copy ...",
          flush=True)
    started = time.perf_counter()
    build_int8_prefill(source, window=max(4096, runner.n_ctx_train), threads=runner.threads, progress=True)
    took = time.perf_counter() - started
    gc.collect()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6
    print(f"{'loaded' if saved else 'built and saved'} in {took:.0f} s: keeps +{rss_gb() - before:.2f} GB, "
          f"process peak {peak:.2f} GB; file {cached_path(source).stat().st_size / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
