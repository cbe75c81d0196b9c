"""The long bench workload: its prompts, its figures and its table with no server; one real run on SmolLM2 (slow)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qwen_stream.bench.long_prompt import (
    CHARS_PER_TOKEN,
    QUESTION,
    Sample,
    build_messages,
    print_long,
    ratios,
    sample_of,
    summarize,
)
from qwen_stream.bench.metrics import StreamTrace
from qwen_stream.cli.main import main
from tests.support.real_runners import HAS_LLAMA_CPP


def _chars(messages: list[dict[str, str]]) -> int:
    return sum(len(m["content"]) for m in messages)


def test_every_round_prompt_starts_with_its_own_nonce_and_differs_nowhere_else() -> None:
    a, b = build_messages("0123abcd"), build_messages("fedc9876")
    assert a[0]["content"].splitlines()[0] == "Session 0123abcd." and "fedc9876" in b[0]["content"].splitlines()[0]
    assert a != b and a[1] == b[1]  # the code and question are the same; only the first line tells rounds apart
    assert a[0]["content"].split("\n", 1)[1] == b[0]["content"].split("\n", 1)[1]


@pytest.mark.parametrize("target", [600, 2400, 6000])
def test_prompt_is_system_prompt_code_and_question_near_the_target_length(target: int) -> None:
    messages = build_messages("n", target)
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert user.startswith("File qwen_stream/bench/metrics.py:\n```python\n") and user.endswith(QUESTION)
    assert user.count("```python\n") == user.count("```\n\n")  # every file is closed, the last cut at a line
    assert 0.9 * target <= _chars(messages) / CHARS_PER_TOKEN <= target


def _trace(submitted: float, times: list[float], usage_tokens: int | None = None) -> StreamTrace:
    """What HttpServerSystem.serve records: a token per content delta, then usage's count at the last one's time."""
    trace = StreamTrace(submitted)
    for t in times:
        trace.add_tokens(t, 1)
        trace.add_text(t, "x")
    if usage_tokens is not None and usage_tokens > trace.n_tokens:
        trace.add_tokens(times[-1], usage_tokens - trace.n_tokens)
    return trace


def test_a_sample_counts_usage_tokens_and_leaves_the_first_token_out_of_decode_speed() -> None:
    s = sample_of(_trace(10.0, [10.5, 11.0, 11.25, 11.5], usage_tokens=9), prompt_tokens=2400)
    assert s == Sample(ttft_ms=500.0, decode_tps=8.0, tokens=9, prompt_tokens=2400)
    by_deltas = sample_of(_trace(0.0, [0.25, 0.5, 0.75]), prompt_tokens=None)
    assert by_deltas.tokens == 3 and by_deltas.decode_tps == 4.0
    assert sample_of(_trace(0.0, [0.2]), None).decode_tps is None  # one token: no decode speed
    with pytest.raises(RuntimeError, match="no content"):
        sample_of(_trace(0.0, []), 100)


def _rows() -> dict[str, dict[str, object]]:
    def row(name: str, ttfts: list[float], tps: float) -> dict[str, object]:
        return summarize(name, [Sample(t, tps, 64, 2410) for t in ttfts], warm_up_ttft_ms=9000.0, start_s=2.0)

    return {"ours-int8": row("ours-int8", [3000.0, 2000.0, 4000.0], 20.0), "ours": row("ours", [6000.0] * 3, 25.0),
            "llama-server": row("llama-server", [5000.0, 4000.0, 4400.0], 24.0)}


def test_medians_and_ratios_of_ours_int8_over_each_peer() -> None:
    rows = _rows()
    assert rows["ours-int8"]["ttft_ms"] == 3000.0 and rows["ours-int8"]["ttft_min_ms"] == 2000.0
    assert rows["ours-int8"]["decode_tps"] == 20.0 and rows["ours-int8"]["prompt_tokens"] == 2410
    got = ratios(rows)
    assert got["ttft_int8_vs_llama_server"] == pytest.approx(3000 / 4400)
    assert got["ttft_int8_vs_ours"] == 0.5 and got["decode_int8_vs_ours"] == 0.8
    assert got["ttft_int8_vs_llama_cpp_python"] is None  # skipped: no ratio, no crash


def test_table_prints_every_system_the_ratios_and_the_skips(capsys: pytest.CaptureFixture[str]) -> None:
    rows = _rows()
    print_long({"model": "m", "prompt_tokens_target": 2400, "max_tokens": 64, "context_length": 4096, "rounds": 3,
                "load": (1.0, 1.0, 1.0), "results": list(rows.values()), "ratios": ratios(rows),
                "skipped": {"llama-cpp-python": "llama_cpp.server cannot be imported"}})
    out = capsys.readouterr().out
    assert all(f"\n{name} " in out for name in rows)
    assert "TTFT ours-int8 / ours: 0.50x" in out and "decode tok/s ours-int8 / ours: 0.80x" in out
    assert "TTFT ours-int8 / llama-cpp-python: -" in out and "skipped llama-cpp-python" in out


def test_bad_long_arguments_are_refused_before_any_server_starts() -> None:
    assert main(["bench", "--workload", "long", "--rounds", "0"]) == 2
    assert main(["bench", "--workload", "long", "--prompt-tokens", "4090"]) == 2  # no room for the answer


@pytest.mark.cold
@pytest.mark.llamacpp
@pytest.mark.slow
@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed")
def test_long_workload_on_smollm2_without_llama_server(tmp_path: Path) -> None:
    env = {**os.environ, "LLAMA_SERVER": str(tmp_path / "no-llama-server"), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run([sys.executable, "-m", "qwen_stream.cli.main", "bench", "--workload", "long", "-m",
                           "smollm2-135m", "--rounds", "1", "--prompt-tokens", "600", "--max-tokens", "8", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    data = json.loads((tmp_path / "bench-long.json").read_text())
    got = {r["system"]: r for r in data["results"]}
    assert {"ours-int8", "ours"} <= set(got) and "llama-server" in data["skipped"]
    assert all(r["tokens"] == 8 and r["ttft_ms"] > 0 for r in got.values())  # every system made exactly 8 tokens
    assert 450 <= got["ours-int8"]["prompt_tokens"] == got["ours"]["prompt_tokens"] <= 700
    assert data["ratios"]["ttft_int8_vs_ours"] > 0 and data["ratios"]["ttft_int8_vs_llama_server"] is None
    assert "TTFT ours-int8 / ours:" in done.stdout and "skipped llama-server" in done.stdout
    assert "long: round 1/1" in done.stderr
