"""Same request, same seed: does the answer change when the prompt comes from the prefix cache? (issues 10, 26)

Three cases, each against the same prompt sent cold (prefix cache emptied first), sampled (temperature 0.8) with
logprobs and a seed of the request's own, one request at a time:
- exact repeat: the same request again, its whole prompt in a slot's cache;
- next turn: turn 2 of a conversation (turn 1 still in the cache) against turn 2 sent cold;
- other system: the question after a request with another system prompt (they share the template's first tokens).
It prints how many answers differ in text and the largest logprob difference, and what exactness costs the next
turn: its time to first token with the own seed (reusing only KV computed as a cold run would) against the same
turn with a drawn seed (reusing the whole conversation).

    python benchmarks/prefix_determinism.py --model smollm2-135m --runner torch --prompts 12 --max-new-tokens 48
"""

from __future__ import annotations

import argparse
import statistics
import time

TOPICS = ["the sea", "a lost key", "robots", "a dragon", "the moon", "coffee", "a library", "winter", "trains",
          "a garden", "music", "an old map", "rain", "a lighthouse", "mountains", "a cat"]


TTFT: list[float] = []  # each answer's time to first token, in call order


def answer(model: object, query: str, history: list[tuple[str, str]], seed: int | None, n: int,
           system: str | None = None) -> tuple[str, list[float]]:
    started = time.perf_counter()
    stream = model.stream(query, history=history, temperature=0.8, seed=seed,  # type: ignore[attr-defined]
                          max_new_tokens=n, logprobs=0, system=system)
    text, logprobs = "", []
    for event in stream:
        if not text and not logprobs:
            TTFT.append(time.perf_counter() - started)
        text += event.delta
        logprobs += [entry.logprob for entry in event.logprobs or []]
    return text, logprobs


def compare(a: tuple[str, list[float]], b: tuple[str, list[float]]) -> tuple[bool, float]:
    """(texts differ, largest logprob difference over the common tokens)."""
    deltas = [abs(x - y) for x, y in zip(a[1], b[1], strict=False)]
    return a[0] != b[0], max(deltas, default=0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--runner", default="auto")
    parser.add_argument("--prompts", type=int, default=12)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    from qwen_stream.api import ChatModel

    model = ChatModel.load(args.model, runner=args.runner, max_batch_size=2, progress=False)
    results: dict[str, list[tuple[bool, float]]] = {"exact repeat": [], "next turn": [], "other system": []}
    own_ttft, drawn_ttft = [], []
    n = args.max_new_tokens
    try:
        for seed, topic in enumerate((TOPICS * 4)[: args.prompts]):
            print(f"prompt {seed + 1}/{args.prompts}", flush=True)
            query = f"Tell me a short story about {topic}."
            model.engine.reset_prefix_cache()
            cold = answer(model, query, [], seed, n)
            results["exact repeat"].append(compare(cold, answer(model, query, [], seed, n)))
            history = [(query, cold[0])]
            warm = answer(model, "Go on.", history, seed, n)  # turn 1 is in the cache
            own_ttft.append(TTFT[-1])
            model.engine.reset_prefix_cache()
            results["next turn"].append(compare(warm, answer(model, "Go on.", history, seed, n)))
            model.engine.reset_prefix_cache()
            answer(model, query, [], seed, n)
            answer(model, "Go on.", history, None, n)  # the same turn with a drawn seed: reuses all of turn 1
            drawn_ttft.append(TTFT[-1])
            model.engine.reset_prefix_cache()
            answer(model, "Hi.", [], None, 4, system="You are a pirate. Answer in one line.")
            results["other system"].append(compare(cold, answer(model, query, [], seed, n)))
    finally:
        model.close()
    print(f"{args.model} on {args.runner}, {args.prompts} prompts x {args.max_new_tokens} tokens, temperature 0.8")
    for case, rows in results.items():
        differ = sum(d for d, _ in rows)
        print(f"  {case:12s}: text differs in {differ} of {len(rows)}; largest logprob difference "
              f"{max(m for _, m in rows):.2e}")
    own, drawn = statistics.median(own_ttft), statistics.median(drawn_ttft)
    print(f"  next turn's time to first token (median): own seed {own:.3f} s, drawn seed {drawn:.3f} s "
          f"({own / drawn:.1f}x: what exactness costs)")


if __name__ == "__main__":
    main()
