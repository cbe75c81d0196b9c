"""`qwen-stream chat` driven as a user would drive it: the real program in a pseudo-terminal (pexpect), with the
tiny random qwen2 model and the real Qwen tokenizer (and, marked slow, the real SmolLM2-135M alias).

Enter is sent as "\\r" as a terminal sends it; "\\n" (Ctrl-J) would add a new line to the input instead.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pexpect
import psutil
import pytest

pytestmark = pytest.mark.cold  # fresh interpreters: the cold tier (tests/conftest.py)

# A fresh prompt: prompt_toolkit turns bracketed paste on as each prompt starts, then draws "User>" (the trailing
# space is a cursor move). Matching only "User>" would also hit the redraw of an accepted line.
PROMPT_RE = re.compile(r"\x1b\[\?2004h(?:\x1b\[[0-9;?]*[A-Za-z])*User>")
ANSWER = "Assistant> "
ANSI_RE = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]|\x1b[()][0-9A-Za-z]|\x1b[=>]")


def _env(**extra: str) -> dict[str, str]:
    env = dict(os.environ)
    # pexpect does not answer prompt_toolkit's cursor-position requests; without this it waits, then warns
    env.update(PROMPT_TOOLKIT_NO_CPR="1", TERM="xterm-256color", COLUMNS="120", LINES="40",
               PYTHONUNBUFFERED="1", HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    env["QWEN_STREAM_HISTORY"] = "off"  # tests never touch the user's saved history; Up sees this session only
    env.update(extra)
    return env


def _spawn(model: str, *extra: str, timeout: float = 60, env: dict[str, str] | None = None) -> pexpect.spawn:
    args = ["-m", "qwen_stream.cli.main", "chat", "-c", model, *extra]
    child = pexpect.spawn(sys.executable, args, env=env or _env(), encoding="utf-8", codec_errors="replace",
                          dimensions=(40, 120), timeout=timeout)
    child.expect(PROMPT_RE, timeout=180)  # loading the model
    return child


def _plain(text: str) -> str:
    return ANSI_RE.sub("", text).replace("\r", "")


def _send_line(child: pexpect.spawn, text: str) -> None:
    child.send(text + "\r")


def _command(child: pexpect.spawn, line: str) -> str:
    """Run one line and return what was printed up to the next prompt, without escape codes."""
    _send_line(child, line)
    child.expect(PROMPT_RE)
    return _plain(child.before)


def _stream_answer(child: pexpect.spawn, question: str) -> list[tuple[float, str]]:
    """Ask, then collect the answer as it arrives: (time, chunk) pairs until the next prompt."""
    _send_line(child, question)
    child.expect_exact(ANSWER)
    seen, child.buffer = child.buffer, ""  # what came with the prefix is the first chunk
    chunks: list[tuple[float, str]] = [(time.monotonic(), seen)] if seen else []
    while (prompt := PROMPT_RE.search(seen)) is None:
        chunk = child.read_nonblocking(4096, timeout=60)
        chunks.append((time.monotonic(), chunk))
        seen += chunk
    end = prompt.start()
    child.buffer = seen[prompt.end():]  # keep what follows the prompt for the next expect
    return _trim(chunks, end)


def _trim(chunks: list[tuple[float, str]], end: int) -> list[tuple[float, str]]:
    """Cut the chunks at character offset `end` (where the next prompt begins)."""
    out: list[tuple[float, str]] = []
    offset = 0
    for stamp, chunk in chunks:
        if offset >= end:
            break
        out.append((stamp, chunk[:end - offset]))
        offset += len(chunk)
    return out


def _quit(child: pexpect.spawn) -> int:
    _send_line(child, ":q")
    child.expect(pexpect.EOF, timeout=30)
    child.close()
    return int(child.exitstatus if child.exitstatus is not None else -1)


@pytest.fixture(scope="module")
def chat(tiny_model_dir: Path) -> Iterator[pexpect.spawn]:
    """One chat process for the command tests (loading costs seconds)."""
    child = _spawn(str(tiny_model_dir), "--runner", "torch", "--max-new-tokens", "48", "--context-length", "1024")
    yield child
    if child.isalive():
        child.terminate(force=True)


def test_a_question_gets_a_streamed_answer(chat: pexpect.spawn) -> None:
    chunks = _stream_answer(chat, "Hello! 请给我讲一个有趣的故事 🤖")
    text = _plain("".join(chunk for _, chunk in chunks))
    assert text.strip(), "the answer is empty"
    assert "\x1b[2J" not in "".join(c for _, c in chunks)  # never clears the screen to reprint
    assert len([c for _, c in chunks if _plain(c).strip()]) >= 2, "the answer arrived in one piece, not streamed"
    history = _command(chat, ":his")
    assert "[1] User: Hello! 请给我讲一个有趣的故事 🤖" in history
    assert "[1] Assistant: " in history


def test_help_and_unknown_commands(chat: pexpect.spawn) -> None:
    text = _command(chat, ":h")
    for spelling in (":quit", ":clear-his", ":history", ":seed", ":conf", ":reset-conf", ":system", ":stats"):
        assert spelling in text
    assert "Unknown command :hlep. Did you mean :help?" in _command(chat, ":hlep")
    assert "Unknown command :frobnicate." in _command(chat, ":frobnicate")
    assert "Type a question" in _command(chat, "   ")


def test_seed_conf_system_and_stats(chat: pexpect.spawn) -> None:
    assert "Seed: 1234" in _command(chat, ":seed")
    assert "Seed set to 7" in _command(chat, ":seed 7")
    assert "must be an integer" in _command(chat, ":seed seven")
    changed = _command(chat, ":conf temperature=0 max_new_tokens=12")
    assert "Settings changed" in changed and re.search(r"temperature\s+= 0\.0", changed)
    assert "Settings unchanged" in _command(chat, ":conf top_p=5")
    assert re.search(r"max_new_tokens\s+= 12", _command(chat, ":conf"))
    assert "System prompt set" in _command(chat, ":system Answer in one word.")
    assert "Answer in one word." in _command(chat, ":system")
    assert "Stats after each answer: on" in _command(chat, ":stats")
    answer = _plain("".join(chunk for _, chunk in _stream_answer(chat, "2+2?")))
    assert re.search(r"first token \d+\.\d+ s · \d+\.\d tok/s · \d+ tokens", answer)
    assert "(cut at 12 tokens" in answer  # the random model never stops early: the length note shows
    assert re.search(r"max_new_tokens\s+= 48", _command(chat, ":reset-conf"))
    assert "Stats after each answer: off" in _command(chat, ":stats")


def test_a_fixed_seed_repeats_the_answer(chat: pexpect.spawn) -> None:
    _command(chat, ":conf temperature=0.9 max_new_tokens=16")
    _command(chat, ":seed 99")
    _command(chat, ":clh")
    first = _plain("".join(c for _, c in _stream_answer(chat, "Same question")))
    _command(chat, ":clh")
    second = _plain("".join(c for _, c in _stream_answer(chat, "Same question")))
    assert first == second  # a fixed seed makes sampling reproducible
    _command(chat, ":reset-conf")


def test_history_multiline_input_and_arrow_keys(chat: pexpect.spawn) -> None:
    assert "History cleared" in _command(chat, ":clear-history")
    assert "no conversation" in _command(chat, ":his")
    chat.send("first line\\\r")  # a trailing backslash asks for another line
    _stream_answer(chat, "second line")
    assert "[1] User: first line\n" in _command(chat, ":history") + "\n"
    assert "second line" in _command(chat, ":his")
    assert "Seed set to 5" in _command(chat, ":seed 5")
    chat.send("\x1b[A")  # Up: the last input comes back
    chat.send("\r")
    chat.expect(PROMPT_RE)
    assert "Seed set to 5" in _plain(chat.before)
    assert "History cleared (1 turn forgotten)" in _command(chat, ":clh")


def test_clear_screen_then_quit(chat: pexpect.spawn) -> None:
    _send_line(chat, ":cl")
    chat.expect(PROMPT_RE)
    assert "\x1b[2J" in chat.before or "\x1b[H" in chat.before
    assert _quit(chat) == 0


def test_input_history_is_saved_and_comes_back_after_a_restart_then_ctrl_d_leaves(tiny_model_dir: Path, tmp_path: Path) -> None:
    history = tmp_path / "state" / "history"
    env = _env(QWEN_STREAM_HISTORY=str(history))
    first = _spawn(str(tiny_model_dir), "--runner", "torch", env=env)
    assert "Seed set to 42" in _command(first, ":seed 42")
    assert _quit(first) == 0
    assert "+:seed 42\n" in history.read_text()

    second = _spawn(str(tiny_model_dir), "--runner", "torch", env=env)
    second.send("\x1b[A\x1b[A")  # Up, Up: the session before ended with ":seed 42" then ":q"
    second.send("\r")
    second.expect(PROMPT_RE)
    assert "Seed set to 42" in _plain(second.before)
    assert _quit(second) == 0
    assert history.read_text().count("+:seed 42\n") == 2

    # --no-history: nothing saved, nothing recalled, even with the file there; Ctrl-D on the empty prompt leaves
    third = _spawn(str(tiny_model_dir), "--runner", "torch", "--no-history", env=env)
    third.send("\x1b[A\r")
    third.expect(PROMPT_RE)
    assert "Seed set" not in _plain(third.before)
    third.sendcontrol("d")
    third.expect(pexpect.EOF, timeout=30)
    third.close()
    assert third.exitstatus == 0
    assert ":q" in history.read_text() and history.read_text().count("+:q\n") == 2


def _cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def test_ctrl_c_stops_the_answer_and_the_chat_goes_on(tiny_model_dir: Path) -> None:
    child = _spawn(str(tiny_model_dir), "--runner", "torch", "--max-new-tokens", "3500", "--context-length",
                   "4096", "--plain")
    try:
        _send_line(child, "Tell me a very long story")
        child.expect_exact(ANSWER)
        child.expect(r"\x1b\[0m[^\x1b\s]{3}")  # the prefix's colour ends, then some answer is on the screen
        child.sendintr()
        child.expect_exact("[stopped]", timeout=30)  # a wait bound, not a latency test: loaded machines lag
        child.expect(PROMPT_RE, timeout=10)
        # compute stopped: the process is idle at the prompt, the engine is not still decoding 3,500 tokens
        before = _cpu_seconds(child.pid)
        time.sleep(1.5)
        assert _cpu_seconds(child.pid) - before < 0.3
        history = _command(child, ":his")
        assert "[1] User: Tell me a very long story" in history and len(history) > 60  # the partial answer kept
        _command(child, ":conf max_new_tokens=8")
        text = _plain("".join(c for _, c in _stream_answer(child, "And another question")))
        assert text.strip() and "[stopped]" not in text
        child.sendcontrol("c")  # Ctrl-C on an empty prompt leaves cleanly
        child.expect(pexpect.EOF, timeout=30)
        child.close()
        assert child.exitstatus == 0
    finally:
        if child.isalive():
            child.terminate(force=True)


def test_piped_input_works_without_a_terminal(tiny_model_dir: Path) -> None:
    script = "hello there\n:his\nline one\\\nline two\n:his\n:q\n"
    done = subprocess.run([sys.executable, "-m", "qwen_stream.cli.main", "chat", "-c", str(tiny_model_dir),
                           "--runner", "torch", "--max-new-tokens", "8"],
                          input=script, capture_output=True, text=True, env=_env(), timeout=300)
    assert done.returncode == 0, done.stderr
    assert "[1] User: hello there" in done.stdout
    assert "[2] User: line one\nline two" in done.stdout
    assert "\x1b[" not in done.stdout  # no colour codes into a pipe


@pytest.mark.slow
def test_real_small_model_answers() -> None:
    child = _spawn("smollm2-135m", "--temperature", "0", "--max-new-tokens", "40", timeout=120)
    try:
        chunks = _stream_answer(child, "What is the capital of France? Answer in English.")
        text = _plain("".join(c for _, c in chunks))
        # Without "in English" the first token is a near-tie between "The" and "L'Étoile" (a French answer)
        assert "Paris" in text and len([c for _, c in chunks if _plain(c).strip()]) >= 4
        assert "History cleared" in _command(child, ":clh")
        assert _quit(child) == 0
    finally:
        if child.isalive():
            child.terminate(force=True)
