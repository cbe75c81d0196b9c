"""What the server serves: the model (or its loading), the names it answers to, limits, metrics and draining."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from qwen_stream.server.errors import APIError
from qwen_stream.server.generation import TokenStrings
from qwen_stream.server.limits import RequestLimits
from qwen_stream.server.metrics import ServerMetrics
from qwen_stream.server.protocol import HealthResponse

if TYPE_CHECKING:
    from qwen_stream.api import ChatModel

log = logging.getLogger("qwen_stream.server")

ModelLoader = Callable[[], "ChatModel"]


class ServerState:
    """The model (or the loading of it) and what hangs off it: metrics, token strings, the served name."""

    def __init__(self, served_model_name: str | None, api_key: str | None, *, aliases: Sequence[str] = (),
                 limits: RequestLimits | None = None, max_tokens_cap: int | None = None) -> None:
        self.model: ChatModel | None = None
        self.load_error: str | None = None
        self.served_name = served_model_name
        self.api_key = api_key
        self.metrics = ServerMetrics(served_model_name or "unknown")
        self.strings: TokenStrings | None = None
        self.owns_model = False
        self.aliases = frozenset(aliases)  # more names a request's "model" may give (--model-alias)
        self.limits = limits or RequestLimits()
        self.max_tokens_cap = max_tokens_cap  # the answer length of a request without max_tokens, at most
        self.draining = False  # SIGTERM received: finishing running requests, refusing new ones
        self._drain_timer: threading.Timer | None = None

    def set_model(self, model: ChatModel) -> None:
        self.served_name = self.served_name or model.name
        self.metrics.model_name = self.served_name
        self.metrics.track_engine(model.engine.stats)
        self.strings = TokenStrings(model.tokenizer)
        self.model = model  # last: a request that sees the model sees everything above

    def load_in_background(self, loader: ModelLoader) -> None:
        def load() -> None:
            try:
                self.set_model(loader())
            except Exception as exc:  # reported by /health and by every generating route
                log.exception("loading the model failed")
                self.load_error = f"{type(exc).__name__}: {exc}"

        self.owns_model = True
        threading.Thread(target=load, name="qwen-stream-load", daemon=True).start()

    def begin_drain(self, timeout_s: float) -> None:
        """Graceful shutdown: refuse new requests (503) now; after ``timeout_s`` abort those still running, so each
        ends with a finish_reason and its client gets a terminal frame and [DONE] before the process exits."""
        if self.draining:
            return
        self.draining = True
        log.warning("shutting down: no new requests; running ones get %.0f s to finish", timeout_s)

        def abort_rest() -> None:
            if self.model is not None:
                aborted = self.model.engine.abort_all()
                if aborted:
                    log.warning("shutdown timeout: %d running requests aborted", aborted)

        self._drain_timer = threading.Timer(timeout_s, abort_rest)
        self._drain_timer.daemon = True
        self._drain_timer.start()

    def stop_drain_timer(self) -> None:
        """The app is shutting down: nothing of ours is left for the timer to abort (the model may be shared)."""
        if self._drain_timer is not None:
            self._drain_timer.cancel()

    def accepts(self, name: str | None) -> bool:
        """Whether a request's ``model`` names what we serve (absent: yes, as most local servers allow)."""
        if name is None or name == self.served_name or name in self.aliases:
            return True
        return self.model is not None and name == self.model.name

    def require_model(self, name: str | None = None) -> tuple[ChatModel, TokenStrings, str]:
        """The model, or the APIError to answer with: 503 while loading, failed or draining; 404 for a ``name``
        (an OpenAI request's ``model``) that is not what this server serves."""
        if self.draining:
            raise APIError(503, "the server is shutting down", "server_error", code="shutting_down")
        if self.model is None or self.strings is None or self.served_name is None:
            if self.load_error is not None:
                raise APIError(503, f"the model failed to load: {self.load_error}", "server_error", code="model_failed")
            raise APIError(503, "the model is still loading, retry shortly", "server_error", code="model_loading",
                           headers={"Retry-After": "5"})
        if not self.accepts(name):
            raise APIError(404, f"The model `{name}` does not exist: this server serves `{self.served_name}`",
                           param="model", code="model_not_found")
        return self.model, self.strings, self.served_name

    def health(self) -> HealthResponse:
        """The truth about serving: loading, failed to load, draining, or what the engine says of its loop."""
        if self.model is None:
            return HealthResponse(status="failed" if self.load_error else "loading", model=self.served_name,
                                  detail=self.load_error)
        if self.draining:
            return HealthResponse(status="draining", model=self.served_name, detail="shutting down")
        report = self.model.engine.health()
        if report.status == "stopped":  # loaded, but the engine stopped: probes must see it, not only requests
            return HealthResponse(status="failed", model=self.served_name, detail="the engine is not running")
        return HealthResponse(status=report.status, model=self.served_name, detail=report.detail)
