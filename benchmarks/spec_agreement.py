"""Is greedy output with speculative decoding the same as without? Two measures, 8 prompts (6 free, 2 edit).

    python benchmarks/spec_agreement.py llamacpp                               # or: torch
    python benchmarks/spec_agreement.py llamacpp --model qwen2.5-coder-1.5b --tokens 128

1. **End to end**: each prompt answered greedily with and without speculation through ``ChatModel``; how many answers
   are identical and how many tokens come before each answer's first difference. One early difference makes the
   rest of that answer differ too (both continuations are greedy, from different prefixes), so this undercounts.
2. **Per position (teacher-forced)**: the plain answer is fed back in chunks of ``--chunk`` tokens, as a
   verification step feeds [last token, drafts...], and each row's argmax is compared with the token plain decoding
   chose there. Every disagreement is printed with the plain run's margin between its top two logits: a margin of
   float-rounding size (a batch of positions may round differently from one position) is a tie, not a bug.
"""

from __future__ import annotations

import argparse

import numpy as np

from qwen_stream.api import ChatModel
from qwen_stream.bench.workloads import FREE_PROMPTS, edit_prompt
from qwen_stream.engine.backend import EngineStats
from qwen_stream.engine.runners.base import ModelRunner, SeqChunk

PROMPTS = [*FREE_PROMPTS[:6], edit_prompt("StockBook"), edit_prompt("GoodsLedger")]


def load(args: argparse.Namespace, speculate: bool) -> ChatModel:
    return ChatModel.load(args.model, runner=args.runner, speculate=speculate, max_batch_size=2, context_length=2048,
                          progress=False)


def answers(model: ChatModel, tokens: int) -> tuple[list[list[int]], EngineStats]:
    outs = [[t for ev in model.stream(p, max_new_tokens=tokens, temperature=0, repetition_penalty=1.0)
             for t in ev.token_ids] for p in PROMPTS]
    return outs, model.engine.stats()


def margins(runner: ModelRunner, prompt: list[int], answer: list[int]) -> tuple[list[int], list[float]]:
    """Plain decoding's choices and top-2 logit margins, one token per forward (slot 0), for the given answer."""
    runner.free_slot(0)
    logits = runner.forward([SeqChunk(0, prompt, 0)])
    choices, gaps = [], []
    for i, token in enumerate([None, *answer[:-1]]):
        if token is not None:
            logits = runner.forward([SeqChunk(0, [token], len(prompt) + i - 1)])
        row = logits[0].numpy()
        top2 = np.partition(row, -2)[-2:]
        choices.append(int(row.argmax()))
        gaps.append(float(top2[1] - top2[0]))
    return choices, gaps


def chunked_choices(runner: ModelRunner, prompt: list[int], answer: list[int], chunk: int) -> list[int]:
    """The argmax after each answer position when the answer is fed ``chunk`` tokens per forward (slot 1)."""
    runner.free_slot(1)
    # the prompt's last token goes with the first chunk, as a decode step feeds its last token with the drafts
    runner.forward([SeqChunk(1, prompt[:-1], 0, want_logits=False)])
    fed = [prompt[-1], *answer[:-1]]
    out: list[int] = []
    for start in range(0, len(fed), chunk):
        part = fed[start:start + chunk]
        rows = runner.forward([SeqChunk(1, part, len(prompt) - 1 + start, n_logits=len(part))])
        out += rows.argmax(dim=-1).tolist()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runner", nargs="?", default="llamacpp", choices=("llamacpp", "torch"))
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--tokens", type=int, default=64, help="answer length (default: 64)")
    parser.add_argument("--chunk", type=int, default=9, help="tokens per verification forward (default: 9, "
                        "the last token and 8 drafts)")
    args = parser.parse_args()

    model = load(args, True)
    spec, s_stats = answers(model, args.tokens)
    model.close()
    model = load(args, False)
    plain, p_stats = answers(model, args.tokens)
    same = sum(a == b for a, b in zip(spec, plain, strict=True))
    before = sum(next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
                 for a, b in zip(spec, plain, strict=True))
    total = sum(len(b) for b in plain)
    print(f"{args.runner} {args.model}: end to end, {same}/{len(PROMPTS)} answers identical; {before}/{total} tokens "
          f"before the first difference; drafted {s_stats.drafted_tokens}, accepted {s_stats.accepted_draft_tokens}; "
          f"steps {s_stats.steps} vs {p_stats.steps}")

    runner = model.runner
    assert runner is not None, "the per-position measure needs the native engine"
    agree = positions = 0
    all_gaps: list[float] = []
    for p, answer in zip(PROMPTS, plain, strict=True):
        prompt = model.inputs.chat([{"role": "user", "content": p}])[0].prompt_ids
        choices, gaps = margins(runner, prompt, answer)
        chunked = chunked_choices(runner, prompt, answer, args.chunk)
        all_gaps += gaps
        for i, (a, b) in enumerate(zip(choices, chunked, strict=True)):
            positions += 1
            agree += a == b
            if a != b:
                print(f"  position {i} of {p[:30]!r}...: one at a time {a}, chunked {b}; top-2 margin {gaps[i]:.2e}")
    model.close()
    print(f"{args.runner} {args.model}: per position, {agree}/{positions} = {100 * agree / positions:.2f}% agree "
          f"(chunks of {args.chunk}); median top-2 margin over all positions {np.median(all_gaps):.2f}")


if __name__ == "__main__":
    main()
