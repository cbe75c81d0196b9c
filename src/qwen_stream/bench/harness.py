"""Drive one system through each concurrency level and summarize what its clients saw."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qwen_stream.bench.metrics import RssSampler, StreamTrace, Summary, now, summarize
from qwen_stream.bench.systems import BenchSystem, Messages

# Short, varied chat prompts; N concurrent streams take the first N (cycling).
PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a refrigerator works to a ten-year-old.",
    "List some tips for learning a new programming language.",
    "What are the main causes of the seasons on Earth?",
    "Describe a walk through a busy market in the morning.",
    "Why is the sky blue? Give a detailed answer.",
    "Write a poem about autumn leaves and the wind.",
    "How do vaccines train the immune system?",
    "Give me a recipe for a simple vegetable soup.",
    "Explain the difference between a list and a tuple in Python.",
    "What should I pack for a week-long hiking trip?",
    "Tell me about the history of the printing press.",
    "How does a bill become a law? Explain step by step.",
    "Write a friendly email inviting a colleague to lunch.",
    "What is photosynthesis and why does it matter?",
    "Describe the rules of chess for a beginner.",
]


def prompt_messages(n: int) -> list[Messages]:
    return [[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}] for i in range(n)]


@dataclass(slots=True)
class LevelResult:
    summary: Summary
    traces: list[StreamTrace] = field(default_factory=list)


def run_level(system: BenchSystem, n: int, on_done: Callable[[], None]) -> list[StreamTrace]:
    """N requests that all arrive at once; a one-at-a-time system serves them in order (so they wait)."""
    messages = prompt_messages(n)
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
                 single_repeats: int = 1) -> list[LevelResult]:
    """Warm up once, then every concurrency level in turn.

    The single-stream level is served ``single_repeats`` times in a row: its TTFT and decode speed are then medians
    rather than one sample (a single TTFT sample moved a ratio by 5-10% between runs)."""
    system.serve(prompt_messages(1)[0], StreamTrace(submitted=now()))  # first-call costs stay out of the figures
    results = []
    for n in levels:
        before = system.stats()
        with RssSampler() as rss:
            traces = [t for _ in range(single_repeats if n == 1 else 1) for t in run_level(system, n, on_done)]
        summary = summarize(system.name, n, traces, rss.peak_mb)
        summary.extra.update(_stats_delta(before, system.stats()))
        results.append(LevelResult(summary, traces))
    return results
