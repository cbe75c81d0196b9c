"""One model's prompt cache directory: the index of what it holds, saves written by a background thread, loads
read and verified on demand.

``<root>/<model file stem>-<key>/<hash of the tokens>.qsp``, one file per saved prompt (files.py). The store opens
by reading every file's header into the index (a damaged one is deleted with a warning), and from then on keeps the
index in step with the directory: an entry joins the index once its file is whole on disk, and entries that no
longer fit under the bound (least recently used first) or that a longer saved prompt supersedes are deleted. The
engine thread asks ``best``/``wants`` and hands ``save`` the state bytes it copied out of the runner; the writing
happens on the store's own thread, so a step waits for one memory copy, not for the disk. Several processes may
share a directory: a file another one deleted is a miss, a file it is writing is invisible until renamed.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from qwen_stream.atomic_file import TEMP_SUFFIX
from qwen_stream.engine.config import DEFAULT_PROMPT_CACHE_GIB, MIN_SAVED_TOKENS
from qwen_stream.engine.prompt_cache.files import (
    SUFFIX,
    DamagedEntryError,
    EntryHeader,
    SavedPrompt,
    entry_name,
    entry_size,
    model_key,
    read_entry,
    read_header,
    write_entry,
)
from qwen_stream.engine.prompt_cache.index import (
    PromptEntry,
    PromptIndex,
    PromptMatch,
    starts_with,
)

logger = logging.getLogger(__name__)

GIB = 1 << 30
_Entry = TypeVar("_Entry", SavedPrompt, EntryHeader)
# States copied out of the runner and not yet on disk hold memory: past this much, new saves are dropped.
MAX_PENDING_BYTES = 512 << 20
STALE_TMP_S = 3600.0  # a temporary file this old was left by a process that died while writing it


@dataclass(slots=True, eq=False)
class _Job:
    name: str
    tokens: np.ndarray
    logits: np.ndarray | None
    state: memoryview | bytes
    exact: int = 0
    row_exact: bool = False


class PromptStore:
    """Thread-safe: the engine thread looks up, loads and queues saves; the writer thread adds what it wrote."""

    def __init__(self, root: str | Path, key: str, *, max_bytes: int, label: str = "model",
                 min_tokens: int = MIN_SAVED_TOKENS, max_pending_bytes: int = MAX_PENDING_BYTES) -> None:
        self.key = key
        self.dir = Path(root).expanduser() / f"{_safe(label)}-{key[:16]}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.min_tokens = min_tokens
        self.max_pending_bytes = max_pending_bytes
        self._index = PromptIndex(max_bytes)
        self._lock = threading.Lock()
        self._pending: dict[str, tuple[np.ndarray, int]] = {}  # queued or being written: tokens, bytes
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._writer: threading.Thread | None = None
        self._closed = False
        self._scan()

    # ---- what it holds ----------------------------------------------------------------------------------------

    def best(self, prompt: Sequence[int]) -> PromptMatch | None:
        """The saved prompt sharing the longest prefix with ``prompt`` (the scheduler's PromptLookup)."""
        with self._lock:
            return self._index.best(prompt)

    def wants(self, prompt: Sequence[int]) -> bool:
        """Whether saving ``prompt`` is worth its copy: long enough, neither saved nor being saved already (as itself
        or as the start of a longer prompt), and the writer not so far behind that ``save`` would drop it (the copy
        out of the runner is what this spares: ~67 MB for a 2.4k-token prompt on the 1.5B)."""
        if len(prompt) < self.min_tokens or self._closed:
            return False
        ids = np.asarray(prompt, dtype=np.int32)
        with self._lock:
            if sum(n for _, n in self._pending.values()) >= self.max_pending_bytes:
                return False
            pending = any(starts_with(t, ids) for t, _ in self._pending.values())
            return not pending and not self._index.covers(ids)

    @property
    def entries(self) -> int:
        with self._lock:
            return len(self._index)

    # ---- saving -----------------------------------------------------------------------------------------------

    def save(self, prompt: Sequence[int], logits: np.ndarray | None, state: memoryview | bytes, exact: int = 0,
             row_exact: bool = False) -> bool:
        """Queue ``prompt``'s state (bytes the runner copied out) for the writer; False when it is dropped (too big
        for the bound, too much waiting for the disk, or the store closed). ``exact``, ``row_exact``: what of it a
        cold prefill computes bit for bit (files.py)."""
        tokens = np.asarray(prompt, dtype=np.int32)
        name = entry_name(tokens)
        size = entry_size(len(self.key), len(tokens), 0 if logits is None else len(logits), len(state))
        with self._lock:
            pending_bytes = sum(n for _, n in self._pending.values())
            if (self._closed or name in self._pending or not self._index.fits(size)
                    or pending_bytes + size > self.max_pending_bytes):
                return False
            self._pending[name] = (tokens, size)
            if self._writer is None:
                self._writer = threading.Thread(target=self._write_all, name="qwen-stream-prompt-cache", daemon=True)
                self._writer.start()
        self._jobs.put(_Job(name, tokens, logits, state, exact, row_exact))
        return True

    def _write_all(self) -> None:
        while (job := self._jobs.get()) is not None:
            try:
                self._write(job)
            except Exception:  # only a cache: serving goes on without this entry
                logger.exception("prompt cache: writing %s failed", job.name)
            finally:
                with self._lock:
                    self._pending.pop(job.name, None)

    def _write(self, job: _Job) -> None:
        size = write_entry(self._path(job.name), self.key, job.tokens, job.logits, job.state, job.exact,
                           job.row_exact)
        entry = PromptEntry(job.name, job.tokens, size, job.logits is not None, time.time(), job.exact,
                            job.row_exact)
        with self._lock:
            doomed = self._index.add(entry)
        self._delete(doomed)
        logger.info("prompt cache: saved a %d-token prompt (%.1f MB)", len(job.tokens), size / 1e6)

    # ---- loading ----------------------------------------------------------------------------------------------

    def read(self, name: str) -> SavedPrompt:
        """The entry, verified. A damaged file is deleted and forgotten (DamagedEntryError, logged); a file gone
        (another process evicted it) is forgotten (FileNotFoundError)."""
        path = self._path(name)
        try:
            return _named(path, read_entry(path, self.key))
        except DamagedEntryError as exc:
            logger.warning("prompt cache: skipping and deleting %s: %s", path, exc)
            self.forget(name)
            path.unlink(missing_ok=True)
            raise
        except FileNotFoundError:
            logger.info("prompt cache: %s is gone (deleted by another process sharing the directory)", path)
            self.forget(name)
            raise

    def touch(self, name: str) -> None:
        """The entry was just loaded: the last to be evicted (its file's mtime says so after a restart)."""
        now = time.time()
        with self._lock:
            self._index.touch(name, now)
        with contextlib.suppress(OSError):
            self._path(name).touch()

    def forget(self, name: str) -> None:
        """Stop offering the entry (its file stays: a load that failed for want of KV cells may work later)."""
        with self._lock:
            self._index.remove(name)

    def close(self, timeout: float = 60.0) -> None:
        """Finish the queued writes (a restarted engine finds them) and stop the writer (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            writer = self._writer
        if writer is not None:
            self._jobs.put(None)
            writer.join(timeout)

    # ---- the directory ----------------------------------------------------------------------------------------

    def _path(self, name: str) -> Path:
        return self.dir / f"{name}{SUFFIX}"

    def _scan(self) -> None:
        """Read every entry's header into the index; damaged files are deleted, then LRU entries past the bound."""
        found: list[PromptEntry] = []
        for path in self.dir.iterdir():
            if path.name.endswith(TEMP_SUFFIX):
                _remove_stale(path)
            elif path.suffix == SUFFIX:
                entry = self._read_entry_header(path)
                if entry is not None:
                    found.append(entry)
        doomed: list[str] = []
        for entry in sorted(found, key=lambda e: e.last_use):
            doomed += self._index.add(entry)
        self._delete(doomed)
        if found:
            logger.info("prompt cache %s: %d saved prompts, %.1f MB", self.dir, len(self._index),
                        self._index.total_bytes / 1e6)

    def _read_entry_header(self, path: Path) -> PromptEntry | None:
        try:
            header = _named(path, read_header(path, self.key))
            return PromptEntry(path.stem, header.tokens, header.size, header.has_logits, path.stat().st_mtime,
                               header.exact, header.row_exact)
        except DamagedEntryError as exc:
            logger.warning("prompt cache: skipping and deleting %s: %s", path, exc)
            path.unlink(missing_ok=True)
        except OSError as exc:
            logger.warning("prompt cache: cannot read %s: %s", path, exc)
        return None

    def _delete(self, names: list[str]) -> None:
        for name in names:
            self._path(name).unlink(missing_ok=True)


def open_prompt_store(root: str | Path, runner: Any, *, size_gib: float = DEFAULT_PROMPT_CACHE_GIB) -> PromptStore:
    """The store of ``runner``'s model under ``root``: ValueError for a runner that cannot save a slot's KV (only
    llama.cpp's can), so the option is never silently ignored."""
    check_saving_runner(runner)
    weights = Path(runner.weights_path)
    return PromptStore(root, model_key(weights, runner.state_layout), max_bytes=int(size_gib * GIB),
                       label=weights.stem)


def check_saving_runner(runner: Any) -> None:
    """ValueError unless ``runner`` saves and loads a slot's KV (only llama.cpp's does), so the option is never
    silently ignored."""
    if not all(callable(getattr(runner, name, None)) for name in ("save_state", "load_state")):
        raise ValueError(f"a prompt cache on disk (--prompt-cache-dir) needs a runner that saves a slot's KV: the "
                         f"llama.cpp runner (a GGUF model); {runner.name} cannot")


def _named(path: Path, entry: _Entry) -> _Entry:
    """``entry`` (read from ``path``), if its tokens are the ones the file's name says; DamagedEntryError otherwise."""
    if entry_name(entry.tokens) != path.stem:
        raise DamagedEntryError(f"{path.name}: its tokens are not the ones its name says")
    return entry


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label)[:60] or "model"


def _remove_stale(path: Path) -> None:
    with contextlib.suppress(OSError):
        if time.time() - path.stat().st_mtime > STALE_TMP_S:
            path.unlink(missing_ok=True)
