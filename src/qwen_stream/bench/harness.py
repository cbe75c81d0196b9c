"""Drive one system through each concurrency level and summarize what its clients saw."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qwen_stream.bench.config import BenchSystem, Messages
from qwen_stream.bench.metrics import RssSampler, StreamTrace, Summary, now, summarize
from qwen_stream.bench.workloads import prompt_messages


@dataclass(slots=True)
class LevelResult:
    summary: Summary
    traces: list[StreamTrace] = field(default_factory=list)


def run_level(system: BenchSystem, n: int, on_done: Callable[[], None], workload: str = "free") -> list[StreamTrace]:
    """N requests that all arrive at once; a one-at-a-time system serves them in order (so they wait)."""
    messages = prompt_messages(n, workload)
    system.reset_cache()  # nothing from an earlier measurement; the N prompts may still share among themselves
    start = now()
    traces = [StreamTrace(submitted=start) for _ in range(n)]
    if not system.concurrent:
        for m, trace in zip(messages, traces, strict=True):
            system.serve(m, trace)
            on_done()
        return traces
    errors: list[BaseException] = []

    def client(m: Messages, trace: StreamTrace) -> None:
        try:
            system.serve(m, trace)
        except BaseException as exc:  # reported on the main thread below
            errors.append(exc)
        on_done()

    workers = [threading.Thread(target=client, args=(m, t), daemon=True) for m, t in zip(messages, traces, strict=True)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    if errors:
        raise RuntimeError(f"{system.name}: {len(errors)} of {n} streams failed: {errors[0]!r}") from errors[0]
    return traces


def _stats_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    delta = {k: after[k] - before.get(k, 0.0) for k in after}
    if delta.get("steps"):
        delta["mean_step_ms"] = 1000.0 * delta["step_s"] / delta["steps"]
    return delta


def requests_per_system(levels: Sequence[int], single_repeats: int) -> int:
    """How many requests ``bench_system`` serves (the progress bar's share of one system)."""
    return sum(single_repeats if n == 1 else n for n in levels)


def bench_system(system: BenchSystem, levels: Sequence[int], on_done: Callable[[], None],
                 single_repeats: int = 1, workload: str = "free") -> list[LevelResult]:
    """Warm up once, then every concurrency level in turn.

    The single-stream level is served ``single_repeats`` times in a row: its TTFT and decode speed are then medians
    rather than one sample (a single TTFT sample moved a ratio by 5-10% between runs). Peak RSS is the server
    process's for a system that runs in one (``pid``), else this process's."""
    # first-call costs stay out of the figures
    system.serve(prompt_messages(1, workload)[0], StreamTrace(submitted=now()))
    results = []
    for n in levels:
        before = system.stats()
        with RssSampler(pid=getattr(system, "pid", None)) as rss:
            traces = [t for _ in range(single_repeats if n == 1 else 1)
                      for t in run_level(system, n, on_done, workload)]
        summary = summarize(system.name, n, traces, rss.peak_mb)
        summary.extra.update(_stats_delta(before, system.stats()))
        results.append(LevelResult(summary, traces))
    return results
