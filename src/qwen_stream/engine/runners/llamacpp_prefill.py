"""The fast prefill on the llama.cpp runner: prompt chunks marked ``SeqChunk.fast`` get their keys and values from
int8 GEMMs (int8_prefill.py) instead of llama.cpp's kernels. Used by the llama.cpp runner only.

For a fast chunk of slot s at positions [start, end): the slot's cached prefix is read back from llama.cpp
(``llama_state_seq_get_data``: the K/V it must attend over), the chunk's K/V computed from it, written as a state of
positions [start, end) into the scratch sequence (``llama_state_seq_set_data``) and shared with slot s
(``llama_memory_seq_cp`` on the unified cache adds a sequence id to cells: no copy), the scratch emptied again. A
chunk that wants logits keeps its last token for llama.cpp, so the next-token row comes from llama.cpp's own
kernels, in the step's one ``llama_decode`` with every other sequence's tokens.

Only the unified cache with float16 KV and V stored by rows (flash attention) is read and written; anything else is
found at the first fast chunk (llamacpp_kv.py refuses the layout), logged once, and the runner keeps llama.cpp's own
prefill from then on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from qwen_stream.engine.runners.base import SeqChunk
from qwen_stream.engine.runners.int8_prefill import Int8Prefill
from qwen_stream.engine.runners.kv_cache import SlotTable
from qwen_stream.engine.runners.llamacpp_kv import build_seq_state, parse_seq_state
from qwen_stream.engine.runners.llamacpp_state import read_state, write_state

logger = logging.getLogger(__name__)


class FastPrefill:
    """Runs a step's fast chunks into llama.cpp's cache; see the module docstring."""

    def __init__(self, ll: ModuleType, ctx: Any, mem: Any, scratch: int, compute: Int8Prefill) -> None:
        self._ll, self._ctx, self._mem, self._scratch, self.compute = ll, ctx, mem, scratch, compute
        self.broken: str | None = None  # why this cache cannot take computed K/V (then never tried again)

    def run(self, chunks: Sequence[SeqChunk], slots: SlotTable) -> list[SeqChunk]:
        """Compute the fast chunks' K/V into their slots (recorded in ``slots``); returns the step's chunks for
        llama.cpp: the others, and each fast chunk's last token where it wants logits. A fast chunk that cannot be
        computed here (a layout refused, no contiguous free cells) goes to llama.cpp whole."""
        left: list[SeqChunk] = []
        for chunk in chunks:
            n = len(chunk.token_ids) - int(chunk.want_logits)
            if not chunk.fast or n < 1 or self.broken is not None:
                left.append(chunk)
                continue
            try:
                self._compute_into(chunk.slot, chunk.token_ids[:n], chunk.start_pos)
            except (ValueError, RuntimeError) as exc:
                if isinstance(exc, ValueError):  # a layout llamacpp_kv.py refuses: it will not change
                    self.broken = str(exc)
                logger.warning("fast prefill: computing with llama.cpp instead (%s)", exc)
                left.append(chunk)
                continue
            slots.lengths[chunk.slot] = chunk.start_pos + n
            if chunk.want_logits:
                left.append(SeqChunk(chunk.slot, chunk.token_ids[n:], chunk.start_pos + n, n_logits=chunk.n_logits))
        return left

    def _compute_into(self, slot: int, token_ids: list[int], start: int) -> None:
        ll, compute = self._ll, self.compute
        prefix = parse_seq_state(read_state(ll, self._ctx, slot), compute.n_layers, compute.width)
        k, v = compute.kv(prefix, token_ids, start)
        end = start + len(token_ids)
        data = build_seq_state(prefix.header, self._scratch, np.arange(start, end, dtype=np.int32), k, v)
        write_state(ll, self._ctx, self._mem, self._scratch, data, end, end)
        try:
            ll.llama_memory_seq_cp(self._mem, self._scratch, slot, start, end)
        finally:
            ll.llama_memory_seq_rm(self._mem, self._scratch, -1, -1)
