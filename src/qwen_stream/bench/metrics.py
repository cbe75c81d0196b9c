"""What a benchmark run records per stream, and the figures it reports (no model, no torch)."""

from __future__ import annotations

import itertools
import math
import os
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(slots=True)
class StreamTrace:
    """One request as its client saw it. Times are ``time.perf_counter()`` seconds."""

    submitted: float
    token_times: list[float] = field(default_factory=list)  # when each generated token reached the client
    first_text: float | None = None  # when the first non-empty text arrived (what a user sees)
    text: str = ""
    token_ids: list[int] = field(default_factory=list)  # when the system reports them (our engine does)

    def add_tokens(self, now: float, count: int) -> None:
        """``count`` tokens arrived at ``now`` (a peer may hand several over at once)."""
        self.token_times.extend([now] * count)

    def add_text(self, now: float, delta: str) -> None:
        if delta and self.first_text is None:
            self.first_text = now
        self.text += delta

    @property
    def n_tokens(self) -> int:
        return len(self.token_times)

    @property
    def ttft(self) -> float | None:
        if self.first_text is not None:
            return self.first_text - self.submitted
        return self.token_times[0] - self.submitted if self.token_times else None

    @property
    def gaps(self) -> list[float]:
        return [b - a for a, b in itertools.pairwise(self.token_times)]

    @property
    def decode_tps(self) -> float | None:
        """Tokens per second after the first token (one stream's decode speed)."""
        if self.n_tokens < 2 or self.token_times[-1] <= self.token_times[0]:
            return None
        return (self.n_tokens - 1) / (self.token_times[-1] - self.token_times[0])


@dataclass(slots=True)
class Summary:
    """The reported figures for one system at one concurrency."""

    system: str
    concurrency: int
    requests: int
    tokens: int
    wall_s: float
    ttft_p50_s: float
    ttft_p95_s: float
    itl_p50_ms: float
    itl_p95_ms: float
    decode_tps: float  # median over streams
    aggregate_tps: float  # all tokens / (last token - first submit)
    peak_rss_mb: float
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    k = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(k), math.ceil(k)
    return ordered[low] + (ordered[high] - ordered[low]) * (k - low)


def summarize(system: str, concurrency: int, traces: Sequence[StreamTrace], peak_rss_mb: float) -> Summary:
    ttfts = [t.ttft for t in traces if t.ttft is not None]
    gaps = [g for t in traces for g in t.gaps]
    speeds = [s for t in traces if (s := t.decode_tps) is not None]
    tokens = sum(t.n_tokens for t in traces)
    start = min((t.submitted for t in traces), default=0.0)
    end = max((t.token_times[-1] for t in traces if t.token_times), default=start)
    wall = end - start
    return Summary(system=system, concurrency=concurrency, requests=len(traces), tokens=tokens, wall_s=wall,
                   ttft_p50_s=percentile(ttfts, 50), ttft_p95_s=percentile(ttfts, 95),
                   itl_p50_ms=1000 * percentile(gaps, 50), itl_p95_ms=1000 * percentile(gaps, 95),
                   decode_tps=percentile(speeds, 50), aggregate_tps=tokens / wall if wall > 0 else math.nan,
                   peak_rss_mb=peak_rss_mb)


def current_rss_mb(pid: int | None = None) -> float:
    """Resident memory of a process now (default: this one), from /proc; NaN once it is gone."""
    try:
        with open(f"/proc/{pid or os.getpid()}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return math.nan


class RssSampler:
    """Peak RSS over a phase, sampled on a thread: ``ru_maxrss`` never falls, so it cannot tell phases apart."""

    def __init__(self, interval_s: float = 0.05, pid: int | None = None) -> None:
        self.interval_s = interval_s
        self.pid = pid  # None: this process
        self.peak_mb = current_rss_mb(pid)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-rss", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = _max(self.peak_mb, current_rss_mb(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = _max(self.peak_mb, current_rss_mb(self.pid))


def _max(a: float, b: float) -> float:
    """max() that ignores NaN (a sample taken as the process ended)."""
    return a if math.isnan(b) else b if math.isnan(a) else max(a, b)


def now() -> float:
    return time.perf_counter()
