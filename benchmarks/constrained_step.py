"""The engine step with N free streams against N JSON-schema-constrained streams, in one run.

Both rounds decode the same prompts for the same number of tokens (the free round ignores EOS; the schema asks for
a long array, so the constrained round runs to the limit too). The engine's own timings say how long a step took
and how much of it went on grammar masks (StepTimings.constrain_s). Run:

    python benchmarks/constrained_step.py --model smollm2-135m --streams 16 --max-tokens 64
"""

from __future__ import annotations

import argparse
import time
from dataclasses import asdict
from typing import Any

from qwen_stream.api import ChatModel

RECORD = {"type": "object", "properties": {"name": {"type": "string", "maxLength": 16},
                                           "age": {"type": "integer", "minimum": 0, "maximum": 120},
                                           "city": {"type": "string", "maxLength": 16},
                                           "member": {"type": "boolean"}},
          "required": ["name", "age", "city", "member"], "additionalProperties": False}
SCHEMA = {"type": "array", "items": RECORD, "minItems": 40}  # longer than any --max-tokens we use


def one_round(model: ChatModel, streams: int, max_tokens: int, constrained: bool) -> dict[str, float]:
    model.engine.reset_prefix_cache()
    before = asdict(model.engine.core.timings)
    extra: dict[str, Any] = {"json_schema": SCHEMA} if constrained else {"ignore_eos": True}
    started = time.perf_counter()
    running = [model.stream(f"List people you know, as JSON. ({i})", temperature=0.8, seed=i,
                            max_new_tokens=max_tokens, **extra) for i in range(streams)]
    finals = [stream.collect() for stream in running]
    wall = time.perf_counter() - started
    after = asdict(model.engine.core.timings)
    d = {k: after[k] - before[k] for k in after}
    return {"tokens": sum(f.num_generated_tokens for f in finals), "wall_s": wall, "steps": d["steps"],
            "step_ms": 1e3 * d["total_s"] / d["steps"], "forward_ms": 1e3 * d["forward_s"] / d["steps"],
            "mask_ms": 1e3 * d["constrain_s"] / d["steps"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--runner", default="auto", choices=["auto", "llamacpp", "torch"])
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    with ChatModel.load(args.model, runner=args.runner, max_batch_size=args.streams, context_length=1024) as model:
        print(f"{args.model} on {type(model.runner).__name__}, {args.streams} streams x {args.max_tokens} tokens")
        model.stream("warm up", json_schema=SCHEMA, max_new_tokens=4).collect()  # compile once, off the clock
        for constrained in (False, True):
            r = one_round(model, args.streams, args.max_tokens, constrained)
            label = "JSON schema" if constrained else "free       "
            print(f"{label}: {r['tokens']:.0f} tokens in {r['wall_s']:.1f} s, {r['steps']:.0f} steps, "
                  f"step {r['step_ms']:.1f} ms (forward {r['forward_ms']:.1f} ms, grammar masks {r['mask_ms']:.2f} ms"
                  f" = {100 * r['mask_ms'] / r['step_ms']:.1f}% of the step)", flush=True)


if __name__ == "__main__":
    main()
