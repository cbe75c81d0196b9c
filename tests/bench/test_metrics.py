"""The bench's figures from scripted stream traces (no model)."""

from __future__ import annotations

import math

import pytest

from qwen_stream.bench.metrics import StreamTrace, percentile, summarize
from qwen_stream.bench.report import ratios


def trace(submitted: float, times: list[float], first_text: float | None = None) -> StreamTrace:
    t = StreamTrace(submitted=submitted)
    for x in times:
        t.add_tokens(x, 1)
    if first_text is not None:
        t.add_text(first_text, "hi")
    return t


def test_percentile_interpolates_like_numpy() -> None:
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.5
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 95) == pytest.approx(4.8)
    assert math.isnan(percentile([], 50))


def test_trace_figures() -> None:
    t = trace(10.0, [10.5, 10.6, 10.8], first_text=10.6)
    assert t.ttft == pytest.approx(0.6)  # the first visible text, not the first token
    assert t.gaps == pytest.approx([0.1, 0.2])
    assert t.decode_tps == pytest.approx(2 / 0.3)
    assert trace(0.0, [0.25]).ttft == 0.25 and trace(0.0, [0.25]).decode_tps is None


def test_several_tokens_in_one_chunk_count_each() -> None:
    t = StreamTrace(submitted=0.0)
    t.add_tokens(1.0, 3)
    t.add_text(1.0, "abc")
    assert t.n_tokens == 3 and t.text == "abc" and t.ttft == 1.0


def test_summary_and_ratios() -> None:
    ours = summarize("ours-llamacpp", 2, [trace(0.0, [0.1, 0.2, 0.3]), trace(0.0, [0.1, 0.2, 0.3])], 100.0)
    peer = summarize("llama-cpp-python", 2, [trace(0.0, [0.1, 0.2, 0.3]), trace(0.0, [0.4, 0.5, 0.6])], 90.0)
    assert ours.tokens == 6 and ours.aggregate_tps == pytest.approx(20.0)
    assert ours.ttft_p50_s == pytest.approx(0.1) and ours.itl_p50_ms == pytest.approx(100.0)
    assert peer.aggregate_tps == pytest.approx(10.0)
    (row,) = ratios([ours, peer])
    assert row["ours"] == "ours-llamacpp" and row["peer"] == "llama-cpp-python"
    assert row["aggregate_tps_x"] == pytest.approx(2.0)
    assert row["ttft_p50_x"] == pytest.approx(0.1 / 0.25)
