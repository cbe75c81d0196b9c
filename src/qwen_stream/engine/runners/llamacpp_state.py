"""One slot's KV as bytes and back on llama.cpp (the prompt cache on disk, engine/prompt_cache): llama.cpp's own
serialisation of one sequence (``llama_state_seq_get_data`` / ``set_data``). Used by the llama.cpp runner only.
"""

from __future__ import annotations

import ctypes
from types import ModuleType
from typing import Any

import numpy as np


def read_state(ll: ModuleType, ctx: Any, seq_id: int) -> memoryview:
    """Sequence ``seq_id``'s KV as llama.cpp serialises it (one copy out of the context)."""
    size = int(ll.llama_state_seq_get_size(ctx, seq_id))
    buffer = np.empty(size, dtype=np.uint8)
    pointer = buffer.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
    if int(ll.llama_state_seq_get_data(ctx, pointer, size, seq_id)) != size:
        raise RuntimeError(f"llama.cpp could not copy sequence {seq_id}'s state")
    return memoryview(buffer.data)


def write_state(ll: ModuleType, ctx: Any, mem: Any, seq_id: int, data: memoryview | bytes, length: int,
                keep: int) -> None:
    """Fill the empty sequence ``seq_id`` with a state of ``length`` positions and keep its first ``keep``;
    RuntimeError, the sequence emptied again, if llama.cpp refuses it or it does not hold ``length`` positions after
    (damaged, another layout, no free KV cells)."""
    source = np.frombuffer(data, dtype=np.uint8)
    pointer = source.ctypes.data_as(ctypes.POINTER(ctypes.c_uint8))
    loaded = int(ll.llama_state_seq_set_data(ctx, pointer, len(source), seq_id))
    held = int(ll.llama_memory_seq_pos_max(mem, seq_id)) + 1
    if loaded == 0 or held != length:
        ll.llama_memory_seq_rm(mem, seq_id, -1, -1)
        raise RuntimeError(f"llama.cpp could not load a saved state of {length} positions into slot {seq_id} "
                           f"(it held {held} after loading; a damaged state, another layout, or no free KV cells)")
    if keep < length:
        ll.llama_memory_seq_rm(mem, seq_id, keep, -1)
