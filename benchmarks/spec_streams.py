"""N concurrent streams with and without speculative decoding: wall time, what was drafted, same text; runs alternating.

    python benchmarks/spec_streams.py --model qwen2.5-coder-1.5b --streams 16 --max-tokens 128 --rounds 2
    python benchmarks/spec_streams.py --streams 1 --workload free --draft-model qwen2.5-coder-0.5b

Each engine (llama.cpp runner, N slots, N x context KV) answers the bench's N prompts of a workload ("free" or
"edit") at once, greedy and of forced length, ``--rounds`` times; rounds alternate between the engines so that
drift hits all of them. Engines: no speculation, prompt lookup (the default), and with ``--draft-model`` prompt
lookup plus that draft model. The speculating engines keep what they learned (step costs, acceptance) from round
to round, as a server does. Prints each round's wall time and tokens per second, the drafted / accepted tokens,
each engine's speed against no speculation, and whether every engine gave the same text.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time

from qwen_stream.api import ChatModel
from qwen_stream.bench.workloads import prompt_messages


def one_round(model: ChatModel, streams: int, max_tokens: int, workload: str) -> tuple[float, list[str]]:
    model.engine.reset_prefix_cache()
    texts = [""] * streams

    def answer(i: int, messages: list[dict[str, str]]) -> None:
        for delta in model.stream(messages=messages, max_new_tokens=max_tokens, temperature=0.0,
                                  repetition_penalty=1.0, ignore_eos=True):
            texts[i] += delta.delta

    threads = [threading.Thread(target=answer, args=(i, m)) for i, m in enumerate(prompt_messages(streams, workload))]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started, texts


def load(args: argparse.Namespace, speculate: bool, draft_model: str | None) -> ChatModel:
    return ChatModel.load(args.model, runner="llamacpp", max_batch_size=args.streams,
                          context_length=args.context_length, kv_budget=args.streams * args.context_length,
                          speculate=speculate, draft_model=draft_model, draft_model_max=args.draft_model_max,
                          progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--draft-model", default=None, help="also run lookup + this draft model")
    parser.add_argument("--draft-model-max", type=int, default=8)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--context-length", type=int, default=1024)
    parser.add_argument("--workload", choices=["free", "edit"], default="free")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-lookup-engine", action="store_true", help="skip the lookup-only engine")
    args = parser.parse_args()
    kinds = [("no-speculate", False, None)] + ([] if args.no_lookup_engine else [("lookup", True, None)])
    if args.draft_model:
        kinds.append((f"lookup+{args.draft_model}", True, args.draft_model))
    print(f"loading {args.model} {len(kinds)} times ...", file=sys.stderr, flush=True)
    models = {name: load(args, speculate, draft) for name, speculate, draft in kinds}
    seconds: dict[str, list[float]] = {name: [] for name in models}
    texts: dict[str, list[str]] = {}
    try:
        for r in range(args.rounds):
            for name, model in models.items():
                wall, texts[name] = one_round(model, args.streams, args.max_tokens, args.workload)
                seconds[name].append(wall)
                stats = model.engine.stats()
                print(f"round {r + 1}, {name}: {wall:.1f} s for {args.streams} x {args.max_tokens} tokens "
                      f"({args.streams * args.max_tokens / wall:.1f} tok/s); drafted {stats.drafted_tokens}, "
                      f"accepted {stats.accepted_draft_tokens} so far", flush=True)
    finally:
        for model in models.values():
            model.close()
    base = seconds["no-speculate"]
    for name, walls in seconds.items():
        ratios = ", ".join(f"{b / w:.2f}x" for b, w in zip(base, walls, strict=True))
        print(f"{name}: speed vs no-speculate per round {ratios}; same text: {texts[name] == texts['no-speculate']}")


if __name__ == "__main__":
    main()
