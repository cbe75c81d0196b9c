"""The models a server can serve, loaded on first use and unloaded when idle or when room is needed.

Each entry is a name (and aliases) with a way to load it. A request names its model; ``acquire`` hands out the
loaded entry, or starts loading it in a background thread (progress in the log) and waits up to ``load_wait_s``
for it, then answers 503 with Retry-After. Loading never blocks the event loop nor requests to models already
loaded. Past ``max_loaded`` models the least recently used idle one is unloaded first (its running requests
finish; new requests for it wait for its unload and reload). After ``keep_alive`` seconds without a request a
model is unloaded (0: once its last request ends; ``inf``: never). Unloading closes the engine, then collects
garbage and gives the freed heap back to the OS. All state changes happen on the event loop; only loading and
unloading run in threads, and post their result back to the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from qwen_stream.client.loaded_model import as_loaded
from qwen_stream.errors import UnknownModelError
from qwen_stream.heap import release_free_heap
from qwen_stream.server.pool.keep_alive import FOREVER
from qwen_stream.server.pool.leases import hold
from qwen_stream.server.wire.errors import APIError

if TYPE_CHECKING:
    from qwen_stream.client.loaded_model import HasLoaded, LoadedModel

log = logging.getLogger("qwen_stream.server")

ModelLoader = Callable[[], "LoadedModel | HasLoaded"]
RETRY_AFTER_S = "5"
_TICK_S = 1.0  # the reaper looks at keep_alive deadlines at least this often
# One load at a time: two threads importing transformers at once break its lazy imports ("cannot import name
# AutoTokenizer", seen with two models requested together), and two loads on the same cores gain nothing.
_LOAD_LOCK = threading.Lock()


class EntryState(enum.Enum):
    UNLOADED = "not loaded"
    LOADING = "loading"
    LOADED = "loaded"
    UNLOADING = "unloading"
    FAILED = "failed"


@dataclass(eq=False)
class PoolEntry:
    """One servable model. ``name`` None: the loaded model's own name (known once loaded)."""

    loader: ModelLoader
    name: str | None = None
    aliases: frozenset[str] = frozenset()
    size: int = 0  # bytes of its files on disk, for /api/ps and /api/tags
    owned: bool = True  # False: handed to us loaded; never unloaded nor closed by the pool
    state: EntryState = EntryState.UNLOADED
    model: LoadedModel | None = None  # the pair every request runs on: input processor and engine client
    error: str | None = None
    leases: int = 0  # requests using it now (see pool/leases.py)
    waiters: int = 0  # requests waiting for it to load: it is not evicted under them
    evicting: bool = False  # chosen to make room: unloaded once its leases are back
    keep_alive_s: float = FOREVER
    expires_at: float = FOREVER  # time.monotonic() after which an idle model is unloaded
    last_used: float = 0.0

    @property
    def display_name(self) -> str | None:
        return self.name or (self.model.name if self.model is not None else None)

    def answers_to(self, name: str) -> bool:
        return name in (self.name, *self.aliases) or (self.model is not None and name == self.model.name)

    def seconds_left(self, now: float) -> float:
        """How long it stays loaded from ``now``: its keep_alive while in use, else until its deadline."""
        return self.keep_alive_s if self.leases else max(self.expires_at - now, 0.0)

    @classmethod
    def pinned(cls, model: LoadedModel | HasLoaded, name: str | None, aliases: Sequence[str] = ()) -> PoolEntry:
        """A model loaded by the caller, who keeps owning it: always loaded, never unloaded."""
        entry = cls(loader=lambda: model, name=name, aliases=frozenset(aliases), owned=False)
        entry.model, entry.state = as_loaded(model), EntryState.LOADED
        return entry


@dataclass
class ModelPool:
    entries: list[PoolEntry]
    max_loaded: int | None = None  # None: no limit
    default_keep_alive_s: float = FOREVER
    load_wait_s: float = 0.0  # how long a request waits for its model to load before a 503
    on_loaded: Callable[[PoolEntry], None] = lambda _entry: None  # metrics: start tracking the engine
    on_unloading: Callable[[PoolEntry], None] = lambda _entry: None
    closed: bool = False
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _loop: asyncio.AbstractEventLoop | None = None

    def __post_init__(self) -> None:
        if not self.entries:
            raise ValueError("a model pool needs at least one model")
        if self.max_loaded is not None and self.max_loaded < 1:
            raise ValueError(f"max_loaded must be >= 1, got {self.max_loaded}")

    # ---- looking up and handing out --------------------------------------------------------------------------

    def lookup(self, name: str | None) -> PoolEntry:
        """The entry a request's ``model`` names (absent: the first, the default); UnknownModelError (404) for a
        name not served."""
        if name is None:
            return self.entries[0]
        for entry in self.entries:
            if entry.answers_to(name):
                return entry
        raise UnknownModelError(name, self.names())

    def servable(self) -> list[PoolEntry]:
        """What /v1/models and /api/tags list: every model that did not fail to load; a 503 when that leaves
        nothing (the one model failed, or is loading and known only by its own name so far)."""
        listed = [e for e in self.entries if e.state is not EntryState.FAILED and e.display_name is not None]
        if listed:
            return listed
        failed = [e for e in self.entries if e.state is EntryState.FAILED]
        if failed:
            errors = "; ".join(str(e.error) for e in failed)
            raise APIError(503, f"the model failed to load: {errors}", "server_error", code="model_failed")
        raise APIError(503, "the model is still loading, retry shortly", "server_error", code="model_loading",
                       headers={"Retry-After": RETRY_AFTER_S})

    def loaded(self) -> list[PoolEntry]:
        return [e for e in self.entries if e.state is EntryState.LOADED and e.model is not None]

    def names(self) -> list[str]:
        return [name for entry in self.entries if (name := entry.display_name) is not None]

    async def acquire(self, name: str | None, keep_alive_s: float | None = None) -> PoolEntry:
        """The entry, held for the current request, once it can serve: a model not loaded starts loading (or waits
        for room to load); past ``load_wait_s`` (0: at once) the answer is a 503 with Retry-After (as ``APIError``)."""
        entry = self.lookup(name)
        deadline = time.monotonic() + self.load_wait_s
        entry.waiters += 1
        try:
            while not self._advance(entry):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise self._not_ready(entry)
                await self._wait_for_change(remaining)
        finally:
            entry.waiters -= 1
        self._notify()  # others waiting for room may now evict this one (it is held, no longer a waiter's)
        return self._hold(entry, keep_alive_s)

    def release(self, entry: PoolEntry) -> None:
        """A request that held ``entry`` ended: its keep_alive counts from now."""
        entry.leases -= 1
        now = time.monotonic()
        entry.last_used = now
        if entry.leases == 0:
            entry.expires_at = now + entry.keep_alive_s
            self._reap()

    def expire(self, name: str | None) -> PoolEntry:
        """Ollama's unload request (keep_alive 0, nothing to answer): unload it once idle; never loads it."""
        entry = self.lookup(name)
        entry.keep_alive_s, entry.expires_at = 0.0, time.monotonic()
        self._reap()
        return entry

    def _hold(self, entry: PoolEntry, keep_alive_s: float | None) -> PoolEntry:
        entry.last_used = time.monotonic()
        entry.keep_alive_s = self.default_keep_alive_s if keep_alive_s is None else keep_alive_s
        if hold(entry):
            entry.leases += 1
        else:  # no request scope to give it back: its keep_alive counts from now
            entry.expires_at = entry.last_used + entry.keep_alive_s
        return entry

    def _advance(self, entry: PoolEntry) -> bool:
        """True if ``entry`` can serve now; else move it on (start its loading, or make room) or raise a 503."""
        if self.closed:
            raise APIError(503, "the server is shutting down", "server_error", code="shutting_down")
        if entry.state is EntryState.LOADED and not entry.evicting:
            return True
        if entry.state is EntryState.FAILED:
            raise APIError(503, f"the model failed to load: {entry.error}", "server_error", code="model_failed")
        if entry.state is EntryState.UNLOADED and self._make_room():
            self._start_load(entry)
        return False

    def _not_ready(self, entry: PoolEntry) -> APIError:
        name = entry.display_name or "the model"
        if entry.state is EntryState.LOADING:
            why = f"{name} is still loading"
        elif entry.state is EntryState.UNLOADED:
            why = f"{name} waits for room: {self.max_loaded} models are loaded and busy"
        else:
            why = f"{name} is being unloaded to make room, and loads again after"
        return APIError(503, f"{why}, retry shortly", "server_error", code="model_loading",
                        headers={"Retry-After": RETRY_AFTER_S})

    # ---- loading and unloading -------------------------------------------------------------------------------

    def preload(self, entry: PoolEntry) -> None:
        """Start loading ``entry`` now (the default model at startup), if it is not loaded and there is room."""
        if entry.state is EntryState.UNLOADED and self._make_room():
            self._start_load(entry)

    def _make_room(self) -> bool:
        """True if one more model may load; else choose the least recently used idle model to unload."""
        occupied = [e for e in self.entries if e.state in (EntryState.LOADING, EntryState.LOADED,
                                                           EntryState.UNLOADING)]
        if self.max_loaded is None or len(occupied) < self.max_loaded:
            return True
        if any(e.evicting or e.state is EntryState.UNLOADING for e in occupied):
            return False  # room is being made already
        candidates = [e for e in occupied if e.state is EntryState.LOADED and e.owned and e.waiters == 0]
        if candidates:
            victim = min(candidates, key=lambda e: e.last_used)
            victim.evicting = True
            log.info("unloading %s to make room (--max-loaded-models %d) once idle (%d requests use it now)",
                     victim.display_name, self.max_loaded, victim.leases)
            self._reap()
        return False

    def _start_load(self, entry: PoolEntry) -> None:
        entry.state = EntryState.LOADING
        loop = self._loop = asyncio.get_running_loop()
        log.info("loading %s", entry.display_name or "the model")

        def load() -> None:
            with _LOAD_LOCK:
                model, error = _load(entry)
            try:
                loop.call_soon_threadsafe(self._loaded, entry, model, error)
            except RuntimeError:  # the loop is gone: the server stopped while this loaded
                if model is not None:
                    model.close()

        threading.Thread(target=load, name=f"qwen-stream-load-{entry.display_name}", daemon=True).start()

    def _loaded(self, entry: PoolEntry, model: LoadedModel | None, error: str | None) -> None:
        if model is None:
            entry.state, entry.error = EntryState.FAILED, error
        elif self.closed:
            _close_in_thread(model)
            entry.state = EntryState.UNLOADED
        else:
            entry.model = model
            entry.last_used = time.monotonic()
            entry.expires_at = entry.last_used + entry.keep_alive_s
            entry.state = EntryState.LOADED
            self.on_loaded(entry)
        self._notify()

    def _reap(self) -> None:
        """Unload every idle model whose keep_alive ran out or that was chosen to make room. A keep_alive does not
        run out while requests wait for the model: it was loaded for them (with the keep_alive 0 of an earlier
        request, the reaper used to unload it before they took it, and again after each reload, until their wait
        ran out)."""
        now = time.monotonic()
        for entry in self.entries:
            idle = entry.state is EntryState.LOADED and entry.owned and entry.leases == 0
            if idle and (entry.evicting or (entry.expires_at <= now and entry.waiters == 0)):
                self._start_unload(entry)

    def _start_unload(self, entry: PoolEntry) -> None:
        model = entry.model
        if model is None:
            return
        self.on_unloading(entry)
        entry.state, entry.evicting = EntryState.UNLOADING, False
        entry.model = None
        loop = self._loop = asyncio.get_running_loop()
        name, held = model.name, [model]
        del model  # ``held`` is the last reference: the thread drops it before collecting garbage

        def unload() -> None:
            before = _rss()
            closing = held.pop()
            closing.close()
            del closing
            gc.collect()  # the tokenizer, grammars and the rest of the model go with their last reference
            release_free_heap()
            log.info("unloaded %s (process RSS %s -> %s MB)", name, before, _rss())
            loop.call_soon_threadsafe(self._unloaded, entry)

        threading.Thread(target=unload, name=f"qwen-stream-unload-{name}", daemon=True).start()

    def _unloaded(self, entry: PoolEntry) -> None:
        entry.state = EntryState.UNLOADED
        self._notify()

    async def run_reaper(self) -> None:
        """Unload models as their keep_alive runs out (a task for the app's lifetime)."""
        while True:
            self._reap()
            await self._wait_for_change(self._next_deadline())

    def _next_deadline(self) -> float:
        now = time.monotonic()
        deadlines = [e.expires_at - now for e in self.entries if e.state is EntryState.LOADED and not e.leases]
        return max(0.05, min([_TICK_S, *deadlines]))

    def close(self) -> None:
        """The app stops: no new loads; close every model the pool loaded (a load still running closes its own)."""
        self.closed = True
        for entry in self.entries:
            if entry.owned and entry.model is not None:
                entry.model.close()
                entry.model = None
                entry.state = EntryState.UNLOADED

    # ---- waiting for changes ---------------------------------------------------------------------------------

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_for_change(self, timeout_s: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), timeout_s)


def _load(entry: PoolEntry) -> tuple[LoadedModel | None, str | None]:
    started = time.monotonic()
    try:
        model = as_loaded(entry.loader())
    except Exception as exc:  # reported by /health and to every request for this model
        log.exception("loading %s failed", entry.display_name or "the model")
        return None, f"{type(exc).__name__}: {exc}"
    log.info("loaded %s in %.1f s", model.name, time.monotonic() - started)
    return model, None


def _close_in_thread(model: LoadedModel) -> None:
    threading.Thread(target=model.close, name="qwen-stream-unload", daemon=True).start()


def _rss() -> str:
    try:
        import psutil
    except ImportError:
        return "?"
    return str(round(psutil.Process().memory_info().rss / 2**20))
