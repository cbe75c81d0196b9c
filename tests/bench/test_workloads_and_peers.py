"""The bench's workloads, llama-server discovery and command line, and per-process peak RSS (no model)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from qwen_stream.bench.config import BenchConfig
from qwen_stream.bench.llama_server import find_llama_server, server_command
from qwen_stream.bench.metrics import RssSampler, current_rss_mb
from qwen_stream.bench.workloads import EDIT_OLD_NAME, EDIT_SOURCE, prompt_messages


def test_edit_workload_asks_to_rewrite_a_module_with_one_rename() -> None:
    assert 2300 <= len(EDIT_SOURCE.encode()) <= 2800
    assert EDIT_SOURCE.count(EDIT_OLD_NAME) >= 4
    prompts = [m[0]["content"] for m in prompt_messages(16, "edit")]
    assert len(set(prompts)) == 16  # every stream renames to its own name
    assert all(EDIT_SOURCE in p and p.startswith(f"Rename the class `{EDIT_OLD_NAME}`") for p in prompts)


def test_free_workload_and_unknown_workload() -> None:
    free = prompt_messages(20, "free")
    assert len(free) == 20 and free[16] == free[0]  # cycles through its 16 prompts
    assert all(m[0]["role"] == "user" for m in free)
    with pytest.raises(ValueError, match="unknown workload"):
        prompt_messages(1, "poetry")


def test_llama_server_is_found_through_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    binary = tmp_path / "llama-server"
    binary.write_text("#!/bin/sh\n")
    monkeypatch.setenv("LLAMA_SERVER", str(binary))
    assert find_llama_server() is None  # not executable
    binary.chmod(binary.stat().st_mode | stat.S_IXUSR)
    assert find_llama_server() == binary
    monkeypatch.setenv("LLAMA_SERVER", str(tmp_path / "missing"))
    assert find_llama_server() is None
    monkeypatch.delenv("LLAMA_SERVER")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert find_llama_server() == binary


def test_llama_server_gets_our_slots_and_context() -> None:
    config = BenchConfig(model=None, max_tokens=32, threads=2, max_batch_size=16, context_length=1024)
    plain = server_command(Path("/bin/llama-server"), Path("m.gguf"), config, 8080, speculative=False)
    spec = server_command(Path("/bin/llama-server"), Path("m.gguf"), config, 8080, speculative=True)
    assert plain[plain.index("-np") + 1] == "16" and plain[plain.index("-c") + 1] == str(16 * 1024)
    assert plain[plain.index("-t") + 1] == "2" and "--spec-type" not in plain
    assert spec[-2:] == ["--spec-type", "ngram-simple"] and spec[:len(plain)] == plain


def test_peak_rss_of_another_process() -> None:
    code = "import time; block = bytearray(200 * 2**20); time.sleep(30)"  # 200 MB, touched (zero-filled)
    child = subprocess.Popen([sys.executable, "-c", code])
    try:
        with RssSampler(interval_s=0.02, pid=child.pid) as rss:
            for _ in range(200):
                if current_rss_mb(child.pid) > 200:
                    break
                subprocess.run(["sleep", "0.05"], check=True)
        # the child's 200 MB block plus a bare interpreter (~10 MB): its memory, not this process's or a sum
        assert 200 < rss.peak_mb < 300, rss.peak_mb
    finally:
        child.kill()
        child.wait()
    assert current_rss_mb(child.pid) != current_rss_mb(child.pid)  # NaN once the process is gone
    assert current_rss_mb(os.getpid()) > 0


def test_llama_server_samples_as_we_do() -> None:
    from qwen_stream.bench import sampling

    messages = [{"role": "user", "content": "hi"}]
    ours = sampling.ours("qwen", messages)
    peer = sampling.llama_server("qwen", messages, context_length=1024)
    assert ours["seed"] == peer["seed"] == sampling.request_seed(messages)
    assert (peer["temperature"], peer["top_k"], peer["top_p"]) == (ours["temperature"], ours["top_k"], ours["top_p"])
    assert peer["repeat_penalty"] == ours["repetition_penalty"] == 1.05
    assert peer["repeat_last_n"] == 1024 and peer["min_p"] == 0.0  # the whole window, not its default 64; no min_p
    greedy = sampling.llama_server("greedy", messages, 1024)
    assert greedy["temperature"] == 0.0 and greedy["repeat_penalty"] == 1.0 and "seed" not in greedy
