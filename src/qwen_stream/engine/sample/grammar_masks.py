"""Grammar-constrained decoding in the core: mask each constrained row of logits, then advance its matcher.

The grammar itself (JSON schema, tool calls) is compiled at the edge; here there are only token ids and the
TokenMatcher protocol (types.py). Constrained and free sequences share one batch: only constrained rows are touched.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from qwen_stream.engine.sample.per_sequence import SamplingState


def mask_constrained(logits: torch.Tensor, states: Sequence[SamplingState | None]) -> int:
    """Forbid, in place, what each constrained row's grammar forbids next; returns how many rows were masked.

    logits: [B, vocab], rows paired with states in order (None: a row to leave alone). Runs before penalties, temperature and argmax, so a
    forbidden token can never be chosen, greedy or sampled."""
    masked = 0
    for row, state in enumerate(states):
        if state is not None and state.matcher is not None:
            state.matcher.mask_logits(logits[row])
            masked += 1
    return masked


def advance(state: SamplingState, token_id: int) -> bool:
    """Move the sequence's grammar past its new token; False when the grammar rejects it."""
    return state.matcher is None or state.matcher.accept_token(token_id)


def grammar_ended(state: SamplingState) -> bool:
    """The grammar accepted its stop token: the answer is complete, whatever ``ignore_eos`` says."""
    return state.matcher is not None and state.matcher.is_terminated()
