"""Time to first token for each turn of one conversation, with prefix reuse on and off (same model, same run).

With prefix reuse, turn N prefills only its new tokens; without it, the whole conversation again.

    python benchmarks/multi_turn_ttft.py --model qwen2.5-coder-1.5b --turns 4 --max-new-tokens 48
"""

from __future__ import annotations

import argparse
import time

QUESTIONS = [
    "Write a Python function that checks whether a string is a palindrome.",
    "Now make it ignore spaces and punctuation.",
    "Add type hints and a docstring.",
    "Write three pytest tests for it.",
    "Explain the time complexity in one sentence.",
]


def conversation(model_name: str, prefix_cache: bool, turns: int, max_new_tokens: int) -> list[tuple[int, float]]:
    """(prompt tokens, TTFT seconds) per turn, greedy."""
    from qwen_stream.api import ChatModel

    model = ChatModel.load(model_name, prefix_cache=prefix_cache, max_batch_size=4, progress=False)
    history: list[tuple[str, str]] = []
    out = []
    try:
        for question in QUESTIONS[:turns]:
            started = time.perf_counter()
            first, text, prompt_tokens = None, "", 0
            for event in model.stream(question, history=history, temperature=0.0, max_new_tokens=max_new_tokens):
                if first is None:
                    first = time.perf_counter() - started
                    prompt_tokens = event.num_prompt_tokens
                text += event.delta
            history.append((question, text))
            out.append((prompt_tokens, first or float("nan")))
    finally:
        model.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--turns", type=int, default=4, choices=range(1, len(QUESTIONS) + 1))
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    runs = {cache: conversation(args.model, cache, args.turns, args.max_new_tokens) for cache in (False, True)}
    print(f"{'turn':>4} {'prompt tokens':>13} {'TTFT, no reuse':>15} {'TTFT, prefix reuse':>19} {'ratio':>6}")
    for turn, ((tokens, off), (_, on)) in enumerate(zip(runs[False], runs[True], strict=True), start=1):
        print(f"{turn:>4} {tokens:>13} {off:>14.2f}s {on:>18.2f}s {on / off:>6.2f}")


if __name__ == "__main__":
    main()
