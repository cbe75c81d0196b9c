"""What our streaming layer costs per token, against the engine's decode step.

Per token the layer does: the engine thread hands the output over (a queue put), the reader takes it (a get),
detokenizes it and checks stop strings (``OutputProcessor.process``). We replay the token ids a real stream
produced through exactly those parts, time them, and divide by the mean decode step measured by the engine.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Sequence
from typing import Any

from qwen_stream.types import FinishReason, SamplingParams, TokenOutput

# Stop strings that never occur, so the matcher does its full hold-back work on every token.
_STOPS = ("\n\nUser:", "<|never|>")


def replay_cost_s(tokenizer: Any, token_ids: Sequence[int], *, repeats: int = 5) -> float:
    """Median seconds per token of hand-off + detokenize + stop check, replaying ``token_ids``."""
    from qwen_stream.output.processor import OutputProcessor

    if not token_ids:
        raise ValueError("no token ids to replay")
    params = SamplingParams(temperature=0.0, max_new_tokens=max(1, len(token_ids)), stop=_STOPS)
    per_token: list[float] = []
    for _ in range(repeats):
        processor = OutputProcessor(tokenizer, params)
        handoff: queue.SimpleQueue[TokenOutput] = queue.SimpleQueue()
        last = len(token_ids) - 1
        start = time.perf_counter()
        for i, token in enumerate(token_ids):
            handoff.put(TokenOutput("bench", [token], FinishReason.LENGTH if i == last else None))
            processor.process(handoff.get())
        per_token.append((time.perf_counter() - start) / len(token_ids))
    return sorted(per_token)[len(per_token) // 2]


def streaming_overhead(tokenizer: Any, token_ids: Sequence[int], step_s: float) -> dict[str, float]:
    """The layer's per-token cost and its share of one decode step (``step_s`` from the engine's stats)."""
    cost = replay_cost_s(tokenizer, token_ids)
    share = cost / step_s if step_s > 0 else float("nan")
    return {"per_token_us": cost * 1e6, "decode_step_ms": step_s * 1e3, "share_of_step": share,
            "tokens_replayed": float(len(token_ids))}
