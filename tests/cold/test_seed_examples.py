"""The seed's examples, with only their imports (and checkpoint) changed, run as real programs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pexpect
import pytest

pytestmark = pytest.mark.cold  # fresh interpreters: the cold tier (tests/conftest.py)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, checkpoint: Path, stdin: str = "") -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / name), str(checkpoint)], input=stdin, text=True,
                          capture_output=True, timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_basic_streaming_prints_the_growing_answer(tiny_model_dir: Path) -> None:
    out = run_example("basic_streaming.py", tiny_model_dir)
    # text mode turns the seed's "\r" into newlines: each frame is one line
    frames = [f for f in out.splitlines() if f.startswith("Qwen: ")]
    assert len(frames) > 3
    assert len(frames[-1]) > len(frames[0])  # the answer grows, frame after frame


def test_callbacks_receive_only_the_new_text(tiny_model_dir: Path) -> None:
    out = run_example("callbacks.py", tiny_model_dir)
    assert out.startswith("Assistant: ") and len(out.strip()) > len("Assistant:")


def test_multi_turn_keeps_history(tiny_model_dir: Path) -> None:
    out = run_example("multi_turn.py", tiny_model_dir, stdin="Hello\nAnd then?\nquit\n")
    assert out.count("You: ") == 3
    assert out.rstrip().endswith("Goodbye!")


def test_interruption_stops_the_stream(tiny_model_dir: Path) -> None:
    child = pexpect.spawn(sys.executable, [str(EXAMPLES / "interruption.py"), str(tiny_model_dir)],
                          env={**os.environ, "PYTHONUNBUFFERED": "1"}, encoding="utf-8", timeout=240)
    try:
        child.expect("Qwen: ")
        child.kill(signal.SIGINT)
        child.expect(r"\[Interrupting generation\.\.\.\]")
        child.expect(r"\[Generation stopped by user\]")
        child.expect("Last response: ")
        child.expect(pexpect.EOF)
        status = child.wait()
    finally:
        child.close()
    assert status == 0
