"""N concurrent streams with and without speculative decoding: wall time and what was drafted, runs alternating.

    python benchmarks/spec_streams.py --model qwen2.5-coder-1.5b --streams 16 --max-tokens 128 --rounds 2

Each engine (llama.cpp runner, N slots, N x context KV) answers the bench's N "free" prompts at once, greedy and of
forced length, ``--rounds`` times; rounds alternate between the two engines so that drift hits both. The speculating
engine keeps what it learned (step costs, acceptance) from round to round, as a server does. Prints each round's
wall time and the drafted / accepted tokens.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from qwen_stream.api import ChatModel
from qwen_stream.bench.workloads import prompt_messages


def one_round(model: ChatModel, streams: int, max_tokens: int, workload: str) -> float:
    model.engine.reset_prefix_cache()

    def answer(messages: list[dict[str, str]]) -> None:
        for _ in model.stream(messages=messages, max_new_tokens=max_tokens, temperature=0.0, repetition_penalty=1.0,
                              ignore_eos=True):
            pass

    threads = [threading.Thread(target=answer, args=(m,)) for m in prompt_messages(streams, workload)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--context-length", type=int, default=1024)
    parser.add_argument("--workload", choices=["free", "edit"], default="free")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    print(f"loading {args.model} twice ...", file=sys.stderr, flush=True)
    models = {name: ChatModel.load(args.model, runner="llamacpp", max_batch_size=args.streams,
                                   context_length=args.context_length,
                                   kv_budget=args.streams * args.context_length, speculate=speculate, progress=False)
              for name, speculate in (("speculate", True), ("no-speculate", False))}
    try:
        for r in range(args.rounds):
            for name, model in models.items():
                seconds = one_round(model, args.streams, args.max_tokens, args.workload)
                stats = model.engine.stats()
                print(f"round {r + 1}, {name}: {seconds:.1f} s for {args.streams} x {args.max_tokens} tokens; "
                      f"drafted {stats.drafted_tokens}, accepted {stats.accepted_draft_tokens} so far", flush=True)
    finally:
        for model in models.values():
            model.close()


if __name__ == "__main__":
    main()
