"""What a benchmark run is configured with, and what every system it compares must do (no system here)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from qwen_stream.bench.metrics import StreamTrace

Messages = list[dict[str, str]]


@dataclass(slots=True)
class BenchConfig:
    model: str | None
    max_tokens: int
    threads: int | None
    max_batch_size: int
    context_length: int
    force_length: bool = True
    dtype: str | None = None
    prefix_cache: bool = True  # False: every request computes its whole prompt
    workload: str = "free"  # "free" answers or "edit" (rewrite a module): see workloads.py
    sampling: str = "greedy"  # "greedy" or "qwen" (Qwen's own defaults): see sampling.py
    extra: dict[str, Any] = field(default_factory=dict)


class BenchSystem(Protocol):
    name: str
    concurrent: bool  # True: N requests are served together; False: one after another

    def serve(self, messages: Messages, trace: StreamTrace) -> None: ...
    def reset_cache(self) -> None: ...
    def stats(self) -> dict[str, float]: ...
    def close(self) -> None: ...


def greedy_only(name: str, config: BenchConfig) -> None:
    """A system whose serve() decodes greedily refuses another sampling (the bench then skips it, saying why)."""
    if config.sampling != "greedy":
        raise ValueError(f"{name} is benched greedy only, not with --sampling {config.sampling}")
