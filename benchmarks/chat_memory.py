"""Peak RSS of `qwen-stream chat` with one user against `llama-server -np 1 -c CONTEXT`, same GGUF, same question.

    LLAMA_SERVER=path/to/llama-server python benchmarks/chat_memory.py --model qwen2.5-coder-1.5b

The chat runs as a user would start it (`qwen-stream chat`, the question on stdin); llama-server answers the same
question streamed over HTTP. Both generate ``--max-tokens`` greedy tokens in a ``--context-length`` window. RSS is
sampled every 50 ms from /proc for the whole life of each process (loading included) and the peak is reported.
For `serve` with 16 streams, `qwen-stream bench --which llama-server --server --concurrency 16` reports both peaks.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from qwen_stream.bench.config import BenchConfig
from qwen_stream.bench.llama_server import LlamaServerSystem
from qwen_stream.bench.metrics import RssSampler, StreamTrace, now
from qwen_stream.bench.workloads import FREE_PROMPTS

QUESTION = FREE_PROMPTS[0]


def chat_peak_mb(model: str, context: int, max_tokens: int, extra: list[str]) -> float:
    command = [sys.executable, "-m", "qwen_stream.cli.main", "chat", "--model", model, "--context-length",
               str(context), "--max-new-tokens", str(max_tokens), "--temperature", "0", "--no-history", "--plain",
               *extra]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True)
    with RssSampler(pid=process.pid) as rss:
        out, _ = process.communicate(QUESTION + "\n")
    if process.returncode != 0:
        raise RuntimeError(f"qwen-stream chat exited with {process.returncode}:\n{out[-2000:]}")
    print(f"chat said: {out.strip().splitlines()[-1][:100]!r}", file=sys.stderr)
    return rss.peak_mb


def llama_server_peak_mb(model: str, context: int, max_tokens: int) -> float:
    config = BenchConfig(model=model, max_tokens=max_tokens, threads=None, max_batch_size=1, context_length=context,
                         force_length=False, dtype=None, prefix_cache=True, workload="free")
    system = LlamaServerSystem(config, speculative=False)
    try:
        with RssSampler(pid=system.pid) as rss:
            system.serve([{"role": "user", "content": QUESTION}], StreamTrace(submitted=now()))
        return rss.peak_mb
    finally:
        system.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--context-length", type=int, default=4096)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--chat-arg", action="append", default=[], help="more `qwen-stream chat` arguments")
    args = parser.parse_args()
    print(f"running qwen-stream chat and llama-server ({args.model}, {args.context_length}-token context) ...",
          file=sys.stderr)
    ours = chat_peak_mb(args.model, args.context_length, args.max_tokens, args.chat_arg)
    theirs = llama_server_peak_mb(args.model, args.context_length, args.max_tokens)
    print(f"peak RSS: qwen-stream chat {ours:.0f} MB, llama-server {theirs:.0f} MB, ratio {ours / theirs:.2f}")


if __name__ == "__main__":
    main()
