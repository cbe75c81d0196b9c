"""A total KV budget in tokens shared by every slot: who may start now, and which idle caches make room for them.

With a budget (the llama.cpp runner's unified cache, ``llama-server -c N``), memory follows the work: a request
reserves the cells its prompt and answer can reach (``min(prompt + max_new_tokens, context)``) when it starts, and
grows into them as it decodes, so a running request can never run out of cells mid-answer (no preemption, no
failed step). Idle slots keep their finished conversations' KV for prefix reuse only while the space is not needed:
when a new request does not fit, the least recently used idle caches are evicted first; when it still does not fit
it waits for running requests to finish. Pure arithmetic, no model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class KVBudget:
    total: int  # cells shared by all slots
    slack: int = 0  # cells a slot may hold past the tokens it keeps (drafts rejected in its last step)

    def __post_init__(self) -> None:
        if self.total < 1 or self.slack < 0:
            raise ValueError(f"a KV budget needs total >= 1 and slack >= 0, got {self.total}, {self.slack}")

    def reserve(self, prompt_len: int, max_new_tokens: int, max_model_len: int) -> int:
        """Cells a request may come to hold: its prompt and answer, within the context window (and the budget:
        alone, any request fits)."""
        return min(min(prompt_len + max_new_tokens, max_model_len) + self.slack, self.total)

    def cached(self, kept_tokens: int) -> int:
        """Cells an idle slot holds for the ``kept_tokens`` it remembers (0 when it remembers none)."""
        return kept_tokens + self.slack if kept_tokens else 0

    def evictions(self, need: int, reserved: int, idle: Sequence[tuple[int, int]]) -> list[int] | None:
        """Which idle slots to forget so that ``need`` more cells fit beside ``reserved`` ones (running requests).

        ``idle``: (slot, cells) of the idle slots holding a cache, least recently used first (the slot the new
        request takes is left out by the caller: it reuses that cache). Returns the slots to evict, oldest first,
        or None when the request cannot fit even with every idle cache gone (it must wait)."""
        free = self.total - reserved - sum(cells for _, cells in idle)
        chosen: list[int] = []
        for slot, cells in idle:
            if need <= free:
                break
            chosen.append(slot)
            free += cells
        return chosen if need <= free else None
