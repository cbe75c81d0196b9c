"""One sequence's KV in llama.cpp's own serialisation, as arrays and back (pure numpy, no llama.cpp here).

The fast prefill (llamacpp_prefill.py) computes a prompt's keys and values elsewhere (int8 GEMMs in PyTorch) and
hands them to llama.cpp's cache by writing the bytes ``llama_state_seq_set_data`` reads; it also reads a slot's
cached prefix back from ``llama_state_seq_get_data`` to attend over it. The layout, as llama-cpp-python 0.3.36's
llama.cpp writes it for one sequence on the unified cache (checked byte for byte against its output by
tests/engine/runners/test_llamacpp_kv.py, so a build that writes another layout is caught at start-up, where
``parse_seq_state`` refuses it):

    u32 magic, u32 sequence id
    u32 streams (1: the unified cache)
    u32 cells; per cell: i32 position, u32 n (1), i32 sequence id
    u32 v_trans (0: rows of V per cell, with flash attention), u32 layers
    per layer K: i32 ggml type, u64 bytes per row, one row per cell
    per layer V: the same

Rows are ``n_kv_heads * head_dim`` float16 values (ggml type 1), keys after RoPE in the GGUF's own head layout.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

GGML_F16 = 1  # the KV cache's default type; the only one this codec reads and writes


@dataclass(slots=True)
class SeqKV:
    """One sequence's cached positions, ascending, with their K and V rows per layer ([cells, width] float16)."""

    header: bytes  # the magic word and sequence id, copied into a state written back
    positions: np.ndarray  # [cells] int32
    k: list[np.ndarray]
    v: list[np.ndarray]


class _Reader:
    def __init__(self, data: memoryview | bytes) -> None:
        self.data, self.at = memoryview(data).cast("B"), 0

    def take(self, fmt: str) -> tuple[int, ...]:
        values = struct.unpack_from(fmt, self.data, self.at)
        self.at += struct.calcsize(fmt)
        return values

    def array(self, dtype: type | np.dtype, count: int) -> np.ndarray:
        out = np.frombuffer(self.data, dtype=dtype, count=count, offset=self.at)
        self.at += out.nbytes
        return out


def parse_seq_state(data: memoryview | bytes, n_layers: int, width: int) -> SeqKV:
    """A ``llama_state_seq_get_data`` result -> its positions (sorted) and float16 K/V rows of ``width`` values.

    ValueError for any other layout (transposed V, quantized KV, several streams, another layer count or width,
    bytes left over): the caller then keeps llama.cpp's own prefill."""
    try:
        return _parse(_Reader(data), len(memoryview(data).cast("B")), n_layers, width)
    except struct.error as exc:
        raise ValueError(f"a llama.cpp sequence state ended early: {exc}") from exc


def _parse(r: _Reader, size: int, n_layers: int, width: int) -> SeqKV:
    header = bytes(r.data[:8])
    r.at = 8
    (streams,) = r.take("<I")
    if streams != 1:
        raise ValueError(f"a state of {streams} KV streams (one per slot): the fast prefill needs the unified cache")
    (cells,) = r.take("<I")
    meta = r.array(np.int32, 3 * cells).reshape(cells, 3) if cells else np.zeros((0, 3), np.int32)
    if cells and not (meta[:, 1] == 1).all():
        raise ValueError("a state whose cells belong to several sequences")
    v_trans, layers = r.take("<II") if cells else (0, n_layers)
    if v_trans:
        raise ValueError("V is stored transposed (flash attention off): not read here")
    if layers != n_layers:
        raise ValueError(f"a state of {layers} layers for a model of {n_layers}")
    order = np.argsort(meta[:, 0], kind="stable")
    kv: list[list[np.ndarray]] = [[], []]
    for part in kv:
        for _ in range(layers if cells else 0):
            ggml_type, row_bytes = r.take("<iQ")
            if ggml_type != GGML_F16 or row_bytes != 2 * width:
                raise ValueError(f"KV rows of ggml type {ggml_type}, {row_bytes} bytes: expected float16 rows of "
                                 f"{width} values (a q8_0 cache is not read here)")
            part.append(r.array(np.float16, cells * width).reshape(cells, width)[order])
    if r.at != size:
        raise ValueError(f"a state of {size} bytes holds {r.at} this layout accounts for")
    if not cells:
        kv = [[np.zeros((0, width), np.float16)] * n_layers for _ in range(2)]
    return SeqKV(header, meta[order, 0].copy(), kv[0], kv[1])


def build_seq_state(header: bytes, seq_id: int, positions: np.ndarray, k: list[np.ndarray],
                    v: list[np.ndarray]) -> bytes:
    """The bytes ``llama_state_seq_set_data`` reads to fill sequence ``seq_id`` with these cells: positions
    [cells] and per layer float16 K and V rows [cells, width]."""
    cells = len(positions)
    if not cells or len(k) != len(v) or any(len(x) != cells for x in (*k, *v)):
        raise ValueError("every layer needs one K and one V row per position, and at least one position")
    meta = np.empty((cells, 3), dtype=np.int32)
    meta[:, 0], meta[:, 1], meta[:, 2] = positions, 1, seq_id
    parts = [header[:4], struct.pack("<iII", seq_id, 1, cells), meta.tobytes(), struct.pack("<II", 0, len(k))]
    for rows in (*k, *v):
        rows = np.ascontiguousarray(rows, dtype=np.float16)
        parts += [struct.pack("<iQ", GGML_F16, rows.shape[1] * 2), rows.tobytes()]
    return b"".join(parts)
