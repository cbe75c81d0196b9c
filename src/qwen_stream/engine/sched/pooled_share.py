"""How many prompt tokens of pooled requests (embeddings, scores) a step may carry beside running streams.

Pooled work is bulk work: a client sends 256 texts at once and waits for all of them, while a chat stream's reader
waits for every next token. So while any stream decodes, a step takes only as many pooled tokens as keep it within
``slowdown`` times what the step would take without them, priced by the forward times this engine measured (the
same learned table speculation prices its drafts with: engine/spec/drafting.StepCost). The table starts
optimistic about sizes it has not seen and learns them as steps run, so the share grows to what the machine
affords; it never more than doubles the step's tokens (MAX_GROWTH), so a cost measured while the machine was busy
elsewhere cannot open the door to a step many times longer. With no stream decoding, pooled prompts take the
step's whole token budget. Pure bookkeeping, no model.
"""

from __future__ import annotations

from qwen_stream.engine.spec.drafting import StepCost

# A step carrying pooled tokens may take this many times as long as the streams' step alone: inter-token latency
# under a flood of embeddings stays within ~1.5x of without it, noise included.
SLOWDOWN = 1.3
# Pooled prompts advance by at least this much per step even beside streams, so a chat-busy server never starves them.
MIN_TOKENS = 1
# ... and at most this many times the step's other tokens (or 8, for a step of one or two decodes)
MAX_GROWTH = 1.0


class PooledShare:
    def __init__(self, max_tokens: int, *, slowdown: float = SLOWDOWN) -> None:
        if slowdown < 1.0:
            raise ValueError(f"slowdown must be >= 1, got {slowdown}")
        self.slowdown = slowdown
        self.cost = StepCost(max_tokens)

    def record(self, n_tokens: int, seconds: float) -> None:
        """One forward of ``n_tokens`` took ``seconds``."""
        self.cost.record(n_tokens, seconds)

    def allowance(self, step_tokens: int, budget: int) -> int:
        """Pooled tokens a step that feeds ``step_tokens`` others, some of them decoding streams, may add (at most
        ``budget``)."""
        room = min(budget, self.cost.max_tokens - step_tokens)
        if room <= 0:
            return 0
        if step_tokens <= 0:
            return room
        room = min(room, max(8, int(MAX_GROWTH * step_tokens)))
        limit = self.slowdown * self.cost.estimate(step_tokens)
        lo, hi = 0, room  # the most extra tokens within the limit: a binary search (costs rise with size)
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if self.cost.estimate(step_tokens + mid) <= limit:
                lo = mid
            else:
                hi = mid - 1
        return max(lo, min(MIN_TOKENS, room))
