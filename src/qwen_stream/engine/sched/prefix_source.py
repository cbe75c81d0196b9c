"""Which running sequence a new prompt copies its prefix from (prefix sharing across slots): token ids only."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from qwen_stream.engine.sched.slot_pool import shared_prefix

if TYPE_CHECKING:
    from qwen_stream.engine.request import Sequence


def pick_source(running: Iterable[Sequence], prompt: list[int]) -> tuple[Sequence | None, int]:
    """The running sequence sharing the longest prefix with prompt (computed or still to compute), and its length.

    Only sequences admitted earlier are candidates, so waits on a source never form a cycle."""
    best: Sequence | None = None
    best_key = (0, 0)
    for seq in running:
        shared = shared_prefix(seq.prompt_ids, prompt)
        if shared == len(seq.prompt_ids):
            shared += shared_prefix(seq.output_ids, prompt[shared:])
        shared = min(shared, len(prompt) - 1)  # the last prompt token is always fed again
        key = (shared, seq.num_computed)  # longest; then the one that has computed the most
        if key > best_key:
            best, best_key = seq, key
    return best, best_key[0]
