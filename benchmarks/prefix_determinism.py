"""Same request, same seed: does the answer change when the prompt comes from the prefix cache? (issue 10)

Two cases, each against the same prompt sent cold (prefix cache emptied first), sampled (temperature 0.8) with
logprobs, one request at a time:
- exact repeat: the same request again, its whole prompt in a slot's cache;
- next turn: turn 2 of a conversation (turn 1 still in the cache) against turn 2 sent cold.
It prints how many answers differ in text and the largest logprob difference.

    python benchmarks/prefix_determinism.py --model smollm2-135m --runner torch --prompts 12 --max-new-tokens 48
"""

from __future__ import annotations

import argparse

TOPICS = ["the sea", "a lost key", "robots", "a dragon", "the moon", "coffee", "a library", "winter", "trains",
          "a garden", "music", "an old map", "rain", "a lighthouse", "mountains", "a cat"]


def answer(model: object, query: str, history: list[tuple[str, str]], seed: int, n: int) -> tuple[str, list[float]]:
    stream = model.stream(query, history=history, temperature=0.8, seed=seed,  # type: ignore[attr-defined]
                          max_new_tokens=n, logprobs=0)
    text, logprobs = "", []
    for event in stream:
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
    results: dict[str, list[tuple[bool, float]]] = {"exact repeat": [], "next turn": []}
    try:
        for seed, topic in enumerate((TOPICS * 4)[: args.prompts]):
            query = f"Tell me a short story about {topic}."
            model.engine.reset_prefix_cache()
            cold = answer(model, query, [], seed, args.max_new_tokens)
            results["exact repeat"].append(compare(cold, answer(model, query, [], seed, args.max_new_tokens)))
            history = [(query, cold[0])]
            warm = answer(model, "Go on.", history, seed, args.max_new_tokens)  # turn 1 is in the cache
            model.engine.reset_prefix_cache()
            results["next turn"].append(compare(warm, answer(model, "Go on.", history, seed, args.max_new_tokens)))
    finally:
        model.close()
    print(f"{args.model} on {args.runner}, {args.prompts} prompts x {args.max_new_tokens} tokens, temperature 0.8")
    for case, rows in results.items():
        differ = sum(d for d, _ in rows)
        print(f"  {case:12s}: text differs in {differ} of {len(rows)}; largest logprob difference "
              f"{max(m for _, m in rows):.2e}")


if __name__ == "__main__":
    main()
