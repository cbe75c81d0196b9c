"""What ``GET /health`` says: the truth about serving, from the pool's entries and each loaded engine's loop.

Load balancers and probes read the status code (200 only when ``ok``); people read ``detail`` and ``models``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict

from qwen_stream.server.pool.model_pool import EntryState, PoolEntry

if TYPE_CHECKING:
    from qwen_stream.server.state import ServerState


class HealthResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    # ok; loading / failed (the model); draining (shutting down); stalled / dead / stopped (the engine loop)
    status: Literal["ok", "loading", "failed", "draining", "stalled", "dead", "stopped"]
    model: str | None = None  # the default model (several served: the one a request without "model" gets)
    detail: str | None = None
    models: dict[str, str] | None = None  # several served: each one's state ("loaded", "not loaded", ...)


def health(state: ServerState) -> HealthResponse:
    """The truth about serving. One model: loading, failed, or what its engine says. Several: ok while the
    pool can serve (models not loaded yet load on demand), the worst loaded engine's state otherwise, and
    each model's state in ``models``."""
    if state.draining:
        return HealthResponse(status="draining", model=state.served_name, detail="shutting down")
    states = {entry: _entry_health(entry) for entry in state.pool.entries}
    if len(states) == 1:
        [(status, detail)] = states.values()
        return HealthResponse(status=status, model=state.served_name, detail=detail)  # type: ignore[arg-type]
    models = {e.display_name or "?": e.state.value if status == "ok" else f"{status}: {detail}" if detail
              else status for e, (status, detail) in states.items()}
    return HealthResponse(status=_pool_status(states), model=state.served_name,  # type: ignore[arg-type]
                          models=models)


def _entry_health(entry: PoolEntry) -> tuple[str, str | None]:
    if entry.state is EntryState.FAILED:
        return "failed", entry.error
    if entry.state is EntryState.LOADING:
        return "loading", None
    if entry.model is None:  # loads on its next request
        return "ok", "not loaded"
    report = entry.model.engine.health()
    if report.status == "stopped":  # loaded, but the engine stopped: probes must see it, not only requests
        return "failed", "the engine is not running"
    return report.status, report.detail


def _pool_status(states: dict[PoolEntry, tuple[str, str | None]]) -> str:
    broken = [status for entry, (status, _) in states.items() if entry.model is not None and status != "ok"]
    if broken:
        return broken[0]  # a loaded engine stalled, died or stopped
    if all(entry.state is EntryState.FAILED for entry in states):
        return "failed"
    default = next(iter(states))
    if default.state is EntryState.LOADING and not any(entry.model is not None for entry in states):
        return "loading"  # the default model loads at start, and nothing else is loaded yet
    return "ok"
