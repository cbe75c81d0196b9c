"""Greedy answers with the fast prefill (int8 GEMMs) against llama.cpp's own prefill, over real prompts (issue 26).

Every prompt is a slice of this repository's own source code (~1,200 characters, ~300 tokens: long enough for
the fast path, which takes chunks of 64+ tokens) with a question about it, answered greedily by two engines on the
same GGUF: ``--prefill int8`` (every prompt chunk but the last token through int8 GEMMs) and ``--prefill llamacpp``
(today's path). It prints the share of identical answers, where the first differing token falls in the others,
and the time each prefill took (the whole answer's time to first token, one request at a time).

    python benchmarks/prefill_agreement.py --model qwen2.5-coder-1.5b --prompts 50 --max-new-tokens 32
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

QUESTIONS = ["Explain what this code does in one paragraph.", "Name one bug or risk in this code.",
             "Write a docstring for the first function here.", "Summarise this code in three bullet points."]


def prompts(n: int, chars: int) -> list[str]:
    """n slices of the package's source files, each with a question after it."""
    root = Path(__file__).resolve().parents[1] / "src" / "qwen_stream"
    text = "\n".join(p.read_text(encoding="utf-8") for p in sorted(root.rglob("*.py")))
    step = max(chars, len(text) // n)
    return [f"```python\n{text[i * step:i * step + chars]}\n```\n{QUESTIONS[i % len(QUESTIONS)]}" for i in range(n)]


def answer(model: object, prompt: str, n: int) -> tuple[str, float]:
    started, first, text = time.perf_counter(), None, ""
    for event in model.stream(prompt, temperature=0.0, max_new_tokens=n):  # type: ignore[attr-defined]
        if first is None and event.delta:
            first = time.perf_counter() - started
        text += event.delta
    return text, first or 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="qwen2.5-coder-1.5b")
    parser.add_argument("--prompts", type=int, default=50)
    parser.add_argument("--chars", type=int, default=1200)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    args = parser.parse_args()
    from qwen_stream.api import ChatModel

    print(f"loading {args.model} twice (--prefill int8 builds int8 weights: about a minute on a 1.5B)", file=sys.stderr)
    common = {"progress": False, "max_batch_size": 1, "context_length": 2048, "speculate": False,
              "prefix_cache": False}
    fast = ChatModel.load(args.model, prefill="int8", **common)
    plain = ChatModel.load(args.model, prefill="llamacpp", **common)
    tokenizer = plain.tokenizer
    same, first_diff, ttft_fast, ttft_plain, prompt_tokens = 0, [], [], [], []
    for i, prompt in enumerate(prompts(args.prompts, args.chars)):
        ours, t_fast = answer(fast, prompt, args.max_new_tokens)
        ref, t_plain = answer(plain, prompt, args.max_new_tokens)
        ttft_fast.append(t_fast)
        ttft_plain.append(t_plain)
        prompt_tokens.append(len(tokenizer(prompt)["input_ids"]))
        if ours == ref:
            same += 1
        else:
            same_chars = next((k for k, (a, b) in enumerate(zip(ours, ref, strict=False)) if a != b),
                              min(len(ours), len(ref)))
            first_diff.append(len(tokenizer(ref[:same_chars])["input_ids"]))
        print(f"[{i + 1}/{args.prompts}] {'same' if ours == ref else 'differs'}; TTFT int8 {t_fast:.2f} s, "
              f"llama.cpp {t_plain:.2f} s", file=sys.stderr, flush=True)
    fast.close()
    plain.close()
    print(f"\n{args.model}: {args.prompts} prompts of {min(prompt_tokens)}-{max(prompt_tokens)} tokens "
          f"(median {statistics.median(prompt_tokens):.0f}), {args.max_new_tokens} greedy tokens each")
    print(f"identical answers: {same}/{args.prompts} ({100 * same / args.prompts:.0f}%)")
    if first_diff:
        print(f"first differing token in the others: median {statistics.median(first_diff):.0f}, "
              f"min {min(first_diff)}, max {max(first_diff)} (of {args.max_new_tokens})")
    print(f"TTFT median: int8 prefill {statistics.median(ttft_fast):.2f} s, llama.cpp {statistics.median(ttft_plain):.2f}"
          f" s ({statistics.median(ttft_fast) / statistics.median(ttft_plain):.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
