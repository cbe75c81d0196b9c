"""The prompt cache's files: one saved prompt per file, written atomically, checksummed, and checked before use.

Layout, little-endian::

    magic b"QSPROMPT" | format version u32 | key length u16 | tokens u32 | logits u32 | state bytes u64
    exact positions u32 | row exact u8
    model key (ascii) | token ids int32[tokens] | logits row float32[logits] (0 or vocabulary width)
    runner state (llama.cpp's bytes for one sequence) | sha256 of everything before it (32 bytes)

A file is written under a temporary name and renamed into place, so a reader sees a whole file or none; the
exact positions: how many leading positions of the state a cold prefill computes bit for bit, and whether the
logits row is a cold run's too (engine/sched/chunk_grid.py): a request with a seed of its own loads only those. The
checksum catches what the rename cannot (a disk that lost pages in a crash, a file edited or cut by hand). The
model key names what the state's bytes depend on (model_key): a file of another key is never loaded. No fsync: a
file damaged by a crash fails its checksum and is skipped, which costs one prefill, not a wrong answer.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qwen_stream.atomic_file import atomic_output

MAGIC = b"QSPROMPT"
FORMAT_VERSION = 2  # 2: exact positions and row
SUFFIX = ".qsp"
# magic, version, key length, token count, logits count, state bytes, exact positions, row exact
_FIXED = struct.Struct("<8sIHIIQIB")
_DIGEST = 32  # sha256
_MIB = 1 << 20


class DamagedEntryError(ValueError):
    """A file that is not a whole, intact entry of this model: it is skipped (and deleted), never loaded."""


@dataclass(slots=True, eq=False)
class EntryHeader:
    tokens: np.ndarray  # int32 [n]
    has_logits: bool
    size: int  # bytes of the whole file
    exact: int = 0  # leading positions a cold prefill computes bit for bit
    row_exact: bool = False  # the logits row is a cold run's


@dataclass(slots=True, eq=False)
class SavedPrompt:
    tokens: np.ndarray  # int32 [n]
    logits: np.ndarray | None  # float32 [vocab]: the row after the prompt, if it was saved
    state: memoryview  # the runner's state bytes (a view into the file's bytes, no copy)


def model_key(weights: Path, layout: str) -> str:
    """What a saved state's bytes depend on, hashed: the weights file (its size, its first and last MiB: cheap, and
    a re-quantized or re-converted GGUF differs there) and the runner's ``layout`` (KV type, cache layout, the
    llama.cpp version)."""
    size = weights.stat().st_size
    digest = hashlib.sha256(f"{size}\n{layout}\n".encode())
    with weights.open("rb") as f:
        digest.update(f.read(_MIB))
        if size > _MIB:
            f.seek(max(_MIB, size - _MIB))
            digest.update(f.read(_MIB))
    return digest.hexdigest()[:32]


def entry_name(tokens: Sequence[int] | np.ndarray) -> str:
    """The file stem of a saved prompt: a hash of its token ids (one file per prompt)."""
    return hashlib.sha256(np.asarray(tokens, dtype="<i4").tobytes()).hexdigest()[:40]


def write_entry(path: Path, key: str, tokens: Sequence[int] | np.ndarray, logits: np.ndarray | None,
                state: memoryview | bytes, exact: int = 0, row_exact: bool = False) -> int:
    """Write one entry to ``path`` atomically (temporary file + rename); returns its size in bytes. ``exact``,
    ``row_exact``: what of it a cold prefill computes bit for bit (the module docstring)."""
    ids = np.asarray(tokens, dtype="<i4")
    row = np.zeros(0, dtype="<f4") if logits is None else np.ascontiguousarray(logits, dtype="<f4")
    key_bytes = key.encode("ascii")
    parts = [_FIXED.pack(MAGIC, FORMAT_VERSION, len(key_bytes), len(ids), len(row), len(state), exact,
                         int(row_exact)), key_bytes,
             ids.tobytes(), row.tobytes(), state]
    digest = hashlib.sha256()
    with atomic_output(path) as f:
        for part in parts:
            digest.update(part)
            f.write(part)
        f.write(digest.digest())
    return entry_size(len(key_bytes), len(ids), len(row), len(state))


def entry_size(key_len: int, n_tokens: int, n_logits: int, n_state: int) -> int:
    """The bytes of an entry's file: header, key, token ids and logits (4 bytes each), state, checksum."""
    return _FIXED.size + key_len + 4 * (n_tokens + n_logits) + n_state + _DIGEST


def read_header(path: Path, key: str) -> EntryHeader:
    """An entry's token ids, cheaply (the state is not read): for the index, when a store opens its directory.
    DamagedEntryError for a file that cannot be a whole entry of ``key`` (its checksum is checked by read_entry)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(_FIXED.size)
        n_tokens, n_logits, _, exact, row_exact = _check_fixed(head, size, key)
        key_len = len(key)
        rest = f.read(key_len + 4 * n_tokens)
    if len(rest) != key_len + 4 * n_tokens or rest[:key_len] != key.encode("ascii"):
        raise DamagedEntryError(f"{path.name}: saved for another model or runner layout")
    return EntryHeader(np.frombuffer(rest, dtype="<i4", offset=key_len).astype(np.int32), n_logits > 0, size, exact,
                       row_exact)


def read_entry(path: Path, key: str) -> SavedPrompt:
    """The whole entry, its checksum and model key verified; DamagedEntryError otherwise."""
    data = path.read_bytes()
    n_tokens, n_logits, n_state = _check_fixed(data[:_FIXED.size], len(data), key)[:3]
    if hashlib.sha256(memoryview(data)[:-_DIGEST]).digest() != data[-_DIGEST:]:
        raise DamagedEntryError(f"{path.name}: checksum mismatch (a damaged or truncated file)")
    at = _FIXED.size
    if data[at:at + len(key)] != key.encode("ascii"):
        raise DamagedEntryError(f"{path.name}: saved for another model or runner layout")
    at += len(key)
    tokens = np.frombuffer(data, dtype="<i4", count=n_tokens, offset=at).astype(np.int32)
    at += 4 * n_tokens
    logits = np.frombuffer(data, dtype="<f4", count=n_logits, offset=at).astype(np.float32) if n_logits else None
    at += 4 * n_logits
    return SavedPrompt(tokens, logits, memoryview(data)[at:at + n_state])


def _check_fixed(head: bytes, size: int, key: str) -> tuple[int, int, int, int, bool]:
    """(tokens, logits, state bytes, exact positions, row exact) from the fixed header, checked against the file's
    size and the key's length."""
    if len(head) < _FIXED.size:
        raise DamagedEntryError("shorter than an entry's header")
    magic, version, key_len, n_tokens, n_logits, n_state, exact, row_exact = _FIXED.unpack(head)
    if magic != MAGIC:
        raise DamagedEntryError("not a prompt cache entry (bad magic)")
    if version != FORMAT_VERSION:
        raise DamagedEntryError(f"format version {version}, this build reads {FORMAT_VERSION}")
    if key_len != len(key):
        raise DamagedEntryError("saved for another model or runner layout")
    expected = entry_size(key_len, n_tokens, n_logits, n_state)
    if size != expected or n_tokens == 0:
        raise DamagedEntryError(f"{size} bytes where its header says {expected} (a truncated or damaged file)")
    if exact > n_tokens or row_exact > 1:
        raise DamagedEntryError("its header's exact positions do not fit its tokens (a damaged file)")
    return n_tokens, n_logits, n_state, exact, bool(row_exact)
