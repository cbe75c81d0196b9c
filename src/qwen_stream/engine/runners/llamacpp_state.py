"""One slot's KV as bytes and back on llama.cpp (the prompt cache on disk, engine/prompt_cache; the fast prefill):
llama.cpp's own serialisation of one sequence (``llama_state_seq_get_data`` / ``set_data``), and the runner's
``save_state``/``load_state`` over it (``SavedStates``). Used by the llama.cpp runner only.
"""

from __future__ import annotations

import ctypes
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from qwen_stream.engine.runners.kv_cache import SlotTable


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


class SavedStates:
    """The llama.cpp runner's saved states (a mixin: the runner's own fields, declared here for the type checker)."""

    gguf_path: Path
    kv_budget: int | None
    kv_type: str | None
    flash_attn: bool | None
    max_slots: int
    max_seq_len: int
    _ll: ModuleType
    _ctx: Any
    _mem: Any
    _slots: SlotTable

    if TYPE_CHECKING:  # the runner's own, which load_state empties the slot with
        def free_slot(self, slot: int) -> None: ...

    @property
    def weights_path(self) -> Path:
        return self.gguf_path

    @property
    def state_layout(self) -> str:
        """What a saved slot state's bytes depend on besides the weights: the KV type, the cache layout (one stream
        or one per slot), V transposed or not (flash attention), and llama.cpp's version."""
        streams = "unified" if self.kv_budget is not None else f"{self.max_slots} streams"
        version = getattr(sys.modules.get("llama_cpp"), "__version__", "unknown")
        return (f"llamacpp; llama-cpp-python {version}; kv {self.kv_type or 'f16'}; {streams}; "
                f"flash_attn {self.flash_attn}")

    def save_state(self, slot: int) -> memoryview:
        """The slot's KV as llama.cpp serialises one sequence (one copy), for ``load_state`` here or in a later
        process whose runner has the same ``state_layout`` and weights."""
        self._slots.check_slot(slot)
        if self._ctx is None:
            raise RuntimeError("LlamaCppRunner is closed")
        return read_state(self._ll, self._ctx, slot)

    def load_state(self, slot: int, data: memoryview | bytes, length: int, keep: int | None = None) -> None:
        """Fill the slot with a state ``save_state`` gave, which holds ``length`` positions, and keep its first
        ``keep`` (all by default). RuntimeError if llama.cpp refuses it (damaged, another layout, no free KV cells):
        the slot is then empty."""
        self._slots.check_slot(slot)
        keep = length if keep is None else keep
        if not 0 < keep <= length <= self.max_seq_len:
            raise ValueError(f"cannot keep {keep} of {length} saved positions in a {self.max_seq_len}-position slot")
        if self._ctx is None:
            raise RuntimeError("LlamaCppRunner is closed")
        self.free_slot(slot)
        write_state(self._ll, self._ctx, self._mem, slot, data, length, keep)
        self._slots.lengths[slot] = keep
