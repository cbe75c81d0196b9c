"""`qwen-stream bench` end to end with tiny settings: it runs, prints, and writes its JSON and chart."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from qwen_stream.cli.main import main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def run_bench(model: str, which: str, out: Path) -> dict:
    rc = main(["bench", "--model", model, "--which", which, "--concurrency", "1,2", "--max-tokens", "4",
               "--context-length", "128", "--threads", "1", "--repeats", str(REPEATS), "--out", str(out),
               "--no-progress"])
    assert rc == 0
    assert (out / "bench.png").read_bytes().startswith(PNG_MAGIC)
    return json.loads((out / "bench.json").read_text())


REPEATS = 2  # the single-stream level is served this many times in a row


def check_results(data: dict, systems: list[str]) -> None:
    assert data["skipped"] == {}
    got = {(r["system"], r["concurrency"]): r for r in data["results"]}
    assert set(got) == {(s, n) for s in systems for n in (1, 2)}
    for (_, n), r in got.items():
        assert r["requests"] == (REPEATS if n == 1 else n)
        assert r["tokens"] == 4 * r["requests"]  # forced length: every system makes exactly --max-tokens
        assert r["ttft_p50_s"] > 0 and r["aggregate_tps"] > 0 and r["peak_rss_mb"] > 0


def test_bench_on_the_tiny_model(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = run_bench(str(tiny_model_dir), "ours-torch,ours-torch-int8,hf", tmp_path)
    check_results(data, ["ours-torch", "ours-torch-int8", "hf"])
    assert {(r["ours"], r["peer"]) for r in data["ratios"]} == {("ours-torch", "hf"), ("ours-torch-int8", "hf")}
    overhead = data["streaming_overhead"]["ours-torch"]
    assert overhead["per_token_us"] > 0 and overhead["decode_step_ms"] > 0
    grammar = data["grammar_overhead"]["ours-torch"]
    assert grammar["streams"] == 2 and grammar["mask_ms_per_step"] > 0 and grammar["share_of_step"] > 0
    printed = capsys.readouterr().out
    assert "aggregate tok/s" in printed and "ours / peer" in printed and "streaming layer" in printed
    assert "JSON-schema masks for 2 streams" in printed


@pytest.mark.llamacpp
@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed")
def test_bench_llamacpp_systems_on_smollm2(tmp_path: Path) -> None:
    data = run_bench("smollm2-135m", "ours-llamacpp,llama-cpp-python", tmp_path)
    check_results(data, ["ours-llamacpp", "llama-cpp-python"])
    assert data["streaming_overhead"]["ours-llamacpp"]["share_of_step"] > 0


def test_bad_arguments_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--which", "ours-torch,nope"])
    assert exc.value.code == 2
    assert "unknown system" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["bench", "--concurrency", "0,4"])
    assert main(["bench", "--which", "hf", "--max-tokens", "1"]) == 2
    assert main(["bench", "--which", "hf", "--repeats", "0"]) == 2


def test_bench_with_qwen_sampling_runs_ours_and_skips_greedy_only_peers(tiny_model_dir: Path, tmp_path: Path) -> None:
    rc = main(["bench", "--model", str(tiny_model_dir), "--which", "ours-torch,hf", "--concurrency", "2",
               "--max-tokens", "4", "--context-length", "128", "--threads", "1", "--sampling", "qwen",
               "--out", str(tmp_path), "--no-progress"])
    assert rc == 0
    data = json.loads((tmp_path / "bench.json").read_text())
    assert data["config"]["sampling"] == "qwen"
    assert [(r["system"], r["tokens"]) for r in data["results"]] == [("ours-torch", 8)]
    assert "greedy only" in data["skipped"]["hf"]  # never benched greedy under a sampled heading
