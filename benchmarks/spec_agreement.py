"""Greedy output with and without speculative decoding: SmolLM2-135M, 8 prompts (6 free, 2 edit) x 64 tokens.

    python benchmarks/spec_agreement.py llamacpp     # or: torch

Prints how many answers are identical, how many tokens come before each answer's first difference, and the drafts.
"""

from __future__ import annotations

import sys

from qwen_stream.api import ChatModel
from qwen_stream.bench.workloads import FREE_PROMPTS, edit_prompt
from qwen_stream.engine.backend import EngineStats

PROMPTS = [*FREE_PROMPTS[:6], edit_prompt("StockBook"), edit_prompt("GoodsLedger")]


def answers(runner: str, speculate: bool) -> tuple[list[list[int]], EngineStats]:
    model = ChatModel.load("smollm2-135m", runner=runner, speculate=speculate, max_batch_size=1, context_length=2048,
                           progress=False)
    outs = [[t for ev in model.stream(p, max_new_tokens=64, temperature=0, repetition_penalty=1.0) for t in ev.token_ids]
            for p in PROMPTS]
    stats = model.engine.stats()
    model.close()
    return outs, stats


def main() -> None:
    runner = sys.argv[1] if len(sys.argv) > 1 else "llamacpp"
    spec, s_stats = answers(runner, True)
    plain, p_stats = answers(runner, False)
    same = sum(a == b for a, b in zip(spec, plain, strict=True))
    before = sum(next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
                 for a, b in zip(spec, plain, strict=True))
    total = sum(len(b) for b in plain)
    print(f"{runner}: {same}/{len(PROMPTS)} answers identical; {before}/{total} tokens before the first difference; "
          f"drafted {s_stats.drafted_tokens}, accepted {s_stats.accepted_draft_tokens}; "
          f"steps {s_stats.steps} vs {p_stats.steps}")


if __name__ == "__main__":
    main()
