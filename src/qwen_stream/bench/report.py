"""Tables, ratios, JSON and the PNG chart of a benchmark run."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from qwen_stream.bench.metrics import Summary

PEERS = ("hf", "llama-cpp-python", "llama-server", "llama-server-ngram", "vllm-serve")


def is_ours(system: str) -> bool:
    return system.startswith("ours")


def _fmt(value: float, digits: int = 2) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def ratios(summaries: Sequence[Summary]) -> list[dict[str, Any]]:
    """Ours against each peer at each concurrency: throughput ratios (>1 is better) and TTFT ratio (<1 is better)."""
    by_key = {(s.system, s.concurrency): s for s in summaries}
    rows = []
    for ours in (s for s in summaries if is_ours(s.system)):
        for peer_name in PEERS:
            peer = by_key.get((peer_name, ours.concurrency))
            if peer is None:
                continue
            rows.append({
                "ours": ours.system, "peer": peer_name, "concurrency": ours.concurrency,
                "aggregate_tps_x": _safe_div(ours.aggregate_tps, peer.aggregate_tps),
                "decode_tps_x": _safe_div(ours.decode_tps, peer.decode_tps),
                "ttft_p50_x": _safe_div(ours.ttft_p50_s, peer.ttft_p50_s),
                "itl_p50_x": _safe_div(ours.itl_p50_ms, peer.itl_p50_ms),
            })
    return rows


def _safe_div(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else math.nan


def print_tables(summaries: Sequence[Summary], ratio_rows: Sequence[dict[str, Any]], title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for column in ("system", "streams", "TTFT p50 s", "TTFT p95 s", "ITL p50 ms", "ITL p95 ms", "decode tok/s",
                   "aggregate tok/s", "peak RSS MB"):
        table.add_column(column, justify="left" if column == "system" else "right")
    for s in summaries:
        table.add_row(s.system, str(s.concurrency), _fmt(s.ttft_p50_s, 3), _fmt(s.ttft_p95_s, 3), _fmt(s.itl_p50_ms, 1),
                      _fmt(s.itl_p95_ms, 1), _fmt(s.decode_tps, 1), _fmt(s.aggregate_tps, 1), _fmt(s.peak_rss_mb, 0))
    # a pipe or a log file gets the full table rather than headers wrapped to 80 columns
    console = Console(width=None if sys.stdout.isatty() else 150)
    console.print(table)
    if ratio_rows:
        rt = Table(title="ours / peer (throughput: higher is better; latency: lower is better)")
        for column in ("ours", "peer", "streams", "aggregate tok/s x", "decode tok/s x", "TTFT p50 x", "ITL p50 x"):
            rt.add_column(column, justify="left" if column in ("ours", "peer") else "right")
        for r in ratio_rows:
            rt.add_row(r["ours"], r["peer"], str(r["concurrency"]), _fmt(r["aggregate_tps_x"]),
                       _fmt(r["decode_tps_x"]), _fmt(r["ttft_p50_x"]), _fmt(r["itl_p50_x"]))
        console.print(rt)


def write_json(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_json_default) + "\n")


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and math.isnan(value):
        return None
    return str(value)


def draw_chart(path: Path, summaries: Sequence[Summary], title: str) -> None:
    """Four panels against the number of concurrent streams: aggregate tok/s, TTFT p50, decode tok/s, ITL p50."""
    import matplotlib

    matplotlib.use("Agg")  # no display: write the file only
    import matplotlib.pyplot as plt

    panels = [("aggregate_tps", "aggregate tok/s", False), ("ttft_p50_s", "TTFT p50 (s)", True),
              ("decode_tps", "decode tok/s per stream", False), ("itl_p50_ms", "inter-token latency p50 (ms)", True)]
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    systems = list(dict.fromkeys(s.system for s in summaries))
    for ax, (attr, label, log_y) in zip(axes.flat, panels, strict=True):
        for system in systems:
            rows = sorted((s for s in summaries if s.system == system), key=lambda s: s.concurrency)
            ax.plot([r.concurrency for r in rows], [getattr(r, attr) for r in rows], marker="o", label=system,
                    linewidth=2.5 if is_ours(system) else 1.5)
        ax.set_xscale("log", base=2)
        if log_y:
            ax.set_yscale("log")
        ax.set_xlabel("concurrent streams")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
    axes.flat[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
