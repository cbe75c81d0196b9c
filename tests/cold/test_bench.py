"""`qwen-stream bench` end to end as users run it (a fresh interpreter), with tiny settings: it runs, prints, and
writes its JSON and chart. (Its refusals of bad arguments, in process: tests/bench/test_bench_cli.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.real_runners import HAS_LLAMA_CPP

pytestmark = pytest.mark.cold  # fresh interpreters: the cold tier (tests/conftest.py)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
REPEATS = 2  # the single-stream level is served this many times in a row


def bench(*args: str) -> str:
    """Run `qwen-stream bench ARGS`; its standard output."""
    done = subprocess.run([sys.executable, "-m", "qwen_stream.cli.main", "bench", *args, "--no-progress"],
                          capture_output=True, text=True, timeout=900, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def run_bench(model: str, which: str, out: Path) -> tuple[dict[str, Any], str]:
    printed = bench("--model", model, "--which", which, "--concurrency", "1,2", "--max-tokens", "4",
                    "--context-length", "128", "--threads", "1", "--repeats", str(REPEATS), "--out", str(out))
    assert (out / "bench.png").read_bytes().startswith(PNG_MAGIC)
    return json.loads((out / "bench.json").read_text()), printed


def check_results(data: dict[str, Any], systems: list[str]) -> None:
    assert data["skipped"] == {}
    got = {(r["system"], r["concurrency"]): r for r in data["results"]}
    assert set(got) == {(s, n) for s in systems for n in (1, 2)}
    for (_, n), r in got.items():
        assert r["requests"] == (REPEATS if n == 1 else n)
        assert r["tokens"] == 4 * r["requests"]  # forced length: every system makes exactly --max-tokens
        assert r["ttft_p50_s"] > 0 and r["aggregate_tps"] > 0 and r["peak_rss_mb"] > 0


def test_bench_on_the_tiny_model(tiny_model_dir: Path, tmp_path: Path) -> None:
    data, printed = run_bench(str(tiny_model_dir), "ours-torch,ours-torch-int8,hf", tmp_path)
    check_results(data, ["ours-torch", "ours-torch-int8", "hf"])
    assert {(r["ours"], r["peer"]) for r in data["ratios"]} == {("ours-torch", "hf"), ("ours-torch-int8", "hf")}
    overhead = data["streaming_overhead"]["ours-torch"]
    assert overhead["per_token_us"] > 0 and overhead["decode_step_ms"] > 0
    grammar = data["grammar_overhead"]["ours-torch"]
    assert grammar["streams"] == 2 and grammar["mask_ms_per_step"] > 0 and grammar["share_of_step"] > 0
    assert "aggregate tok/s" in printed and "ours / peer" in printed and "streaming layer" in printed
    assert "JSON-schema masks for 2 streams" in printed


@pytest.mark.llamacpp
@pytest.mark.slow
@pytest.mark.skipif(not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed")
def test_bench_llamacpp_systems_on_smollm2(tmp_path: Path) -> None:
    data, _ = run_bench("smollm2-135m", "ours-llamacpp,llama-cpp-python", tmp_path)
    check_results(data, ["ours-llamacpp", "llama-cpp-python"])
    assert data["streaming_overhead"]["ours-llamacpp"]["share_of_step"] > 0


def test_bench_with_qwen_sampling_runs_ours_and_skips_greedy_only_peers(tiny_model_dir: Path, tmp_path: Path) -> None:
    bench("--model", str(tiny_model_dir), "--which", "ours-torch,hf", "--concurrency", "2", "--max-tokens", "4",
          "--context-length", "128", "--threads", "1", "--sampling", "qwen", "--out", str(tmp_path))
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["config"]["sampling"] == "qwen"
    assert [(r["system"], r["tokens"]) for r in data["results"]] == [("ours-torch", 8)]
    assert "greedy only" in data["skipped"]["hf"]  # never benched greedy under a sampled heading
