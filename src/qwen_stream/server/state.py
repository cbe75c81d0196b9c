"""What the server serves: the model pool (what may be loaded, what is), limits, metrics and draining."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from qwen_stream.server.metrics import ServerMetrics
from qwen_stream.server.pipeline.limits import RequestLimits
from qwen_stream.server.pool.model_pool import ModelLoader, ModelPool, PoolEntry
from qwen_stream.server.wire.errors import APIError

if TYPE_CHECKING:
    from qwen_stream.client.loaded_model import LoadedModel

log = logging.getLogger("qwen_stream.server")

__all__ = ["ModelLoader", "ServerState"]


@dataclass(slots=True, frozen=True)
class Served:
    """A request's model, held until the request ends."""

    model: LoadedModel  # its input processor and engine client
    name: str  # the name answers carry


class ServerState:
    """The model pool and what hangs off it: metrics per model, limits, the API keys, draining."""

    def __init__(self, pool: ModelPool, api_keys: Sequence[str] = (), *, limits: RequestLimits | None = None,
                 max_tokens_cap: int | None = None) -> None:
        self.pool = pool
        self.api_keys = tuple(api_keys)  # any of them opens the API (none: no key needed)
        self.metrics = ServerMetrics(pool.entries[0].display_name or "unknown")
        self._metric_views: dict[str, ServerMetrics] = {}
        self.limits = limits or RequestLimits()
        self.max_tokens_cap = max_tokens_cap  # every answer's length, at most (inputs/answer_length.py)
        self.draining = False  # SIGTERM received: finishing running requests, refusing new ones
        self._drain_timer: threading.Timer | None = None
        pool.on_loaded, pool.on_unloading = self._track, self._untrack
        for entry in pool.entries:
            if entry.model is not None:
                self._track(entry)

    @property
    def served_name(self) -> str | None:
        """The default model's name (None until a model named by its own name has loaded)."""
        return self.pool.entries[0].display_name

    def metrics_for(self, name: str) -> ServerMetrics:
        """The metrics labelled with model ``name`` (the served name a route got from ``resolve``)."""
        if name == self.metrics.model_name:
            return self.metrics
        return self._metric_views.setdefault(name, self.metrics.for_model(name))

    def _track(self, entry: PoolEntry) -> None:
        name = entry.display_name or "unknown"
        if entry is self.pool.entries[0]:
            self.metrics.model_name = name
        if entry.model is not None:
            self.metrics_for(name).track_engine(entry.model.engine.stats)

    def _untrack(self, entry: PoolEntry) -> None:
        self.metrics_for(entry.display_name or "unknown").untrack_engine()

    async def resolve(self, name: str | None = None, keep_alive_s: float | None = None) -> Served:
        """The loaded model a request's ``model`` names (absent: the default), held until the request ends: 404 for
        a name not served, 503 while draining; a model not loaded starts loading, and the request waits up to the
        pool's ``load_wait_s`` for it, then gets a 503 with Retry-After. ``keep_alive_s`` (Ollama's keep_alive): how
        long it stays loaded after this request (None: the server's default)."""
        self._refuse_if_draining()
        return self._served(await self.pool.acquire(name, keep_alive_s))

    async def model_for(self, name: str | None = None) -> LoadedModel:
        return (await self.resolve(name)).model

    def _refuse_if_draining(self) -> None:
        if self.draining:
            raise APIError(503, "the server is shutting down", "server_error", code="shutting_down")

    @staticmethod
    def _served(entry: PoolEntry) -> Served:
        model, name = entry.model, entry.display_name
        if model is None or name is None:  # acquire hands out loaded entries only
            raise APIError(503, "the model is not loaded, retry shortly", "server_error", code="model_loading",
                           headers={"Retry-After": "5"})
        return Served(model, name)

    def begin_drain(self, timeout_s: float) -> None:
        """Graceful shutdown: refuse new requests (503) now; after ``timeout_s`` abort those still running, so each
        ends with a finish_reason and its client gets a terminal frame and [DONE] before the process exits."""
        if self.draining:
            return
        self.draining = True
        log.warning("shutting down: no new requests; running ones get %.0f s to finish", timeout_s)

        def abort_rest() -> None:
            for entry in self.pool.entries:
                model = entry.model
                aborted = model.engine.abort_all() if model is not None else 0
                if model is not None and aborted:
                    log.warning("shutdown timeout: %d running requests of %s aborted", aborted, model.name)

        self._drain_timer = threading.Timer(timeout_s, abort_rest)
        self._drain_timer.daemon = True
        self._drain_timer.start()

    def stop_drain_timer(self) -> None:
        """The app is shutting down: nothing of ours is left for the timer to abort (the model may be shared)."""
        if self._drain_timer is not None:
            self._drain_timer.cancel()
