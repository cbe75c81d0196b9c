"""The terminal chat's saved input history: where it goes, that it survives a restart, that a bad place never
crashes. The prompt_toolkit reader is driven for real through a pipe input (what a terminal would type)."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from prompt_toolkit.application import create_app_session
from prompt_toolkit.history import InMemoryHistory
from prompt_toolkit.input import PipeInput, create_pipe_input
from prompt_toolkit.output import DummyOutput

from qwen_stream.cli.history import HISTORY_ENV, SafeFileHistory, default_history_path, open_history
from qwen_stream.cli.line_input import PlainLineReader, PromptToolkitLineReader, make_line_reader

UP = "\x1b[A"


@pytest.fixture
def terminal() -> Iterator[PipeInput]:
    """Keys typed into a prompt_toolkit session with no real terminal; output goes nowhere."""
    with create_pipe_input() as keys, create_app_session(input=keys, output=DummyOutput()):
        yield keys


def _read(reader: PromptToolkitLineReader, keys: PipeInput, typed: str) -> str:
    keys.send_text(typed)
    return reader.read("User> ")


def test_default_place_follows_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_history_path({}) == tmp_path / ".local" / "state" / "qwen-stream" / "history"
    assert default_history_path({"XDG_STATE_HOME": "/var/state"}) == Path("/var/state/qwen-stream/history")
    relative = default_history_path({"XDG_STATE_HOME": "state"})  # the XDG spec: ignore a relative one
    assert relative == tmp_path / ".local" / "state" / "qwen-stream" / "history"
    chosen = default_history_path({HISTORY_ENV: "~/my-history", "XDG_STATE_HOME": "/ignored"})
    assert chosen == tmp_path / "my-history"


@pytest.mark.parametrize("off", ["", "off", "OFF", "none", "0", " no "])
def test_the_environment_can_turn_saving_off(off: str) -> None:
    assert default_history_path({HISTORY_ENV: off}) is None
    assert isinstance(open_history(None), InMemoryHistory)


def test_history_is_created_private_with_its_folders(tmp_path: Path) -> None:
    path = tmp_path / "state" / "qwen-stream" / "history"
    history = open_history(path, warn=pytest.fail)
    assert isinstance(history, SafeFileHistory)
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # what the user typed is theirs alone
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def test_lines_survive_a_restart_multiline_included(tmp_path: Path, terminal: PipeInput) -> None:
    path = tmp_path / "history"
    first = PromptToolkitLineReader(history_file=path)
    assert _read(first, terminal, "what is 2+2?\r") == "what is 2+2?"
    assert _read(first, terminal, "line one\\\rline two\r") == "line one\nline two"
    assert "+what is 2+2?\n" in path.read_text()

    second = PromptToolkitLineReader(history_file=path)  # a new session on the same file
    assert _read(second, terminal, UP + "\r") == "line one\nline two"
    assert _read(second, terminal, UP + UP + UP + "\r") == "what is 2+2?"


def test_without_a_file_nothing_is_written(tmp_path: Path, terminal: PipeInput,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    reader = PromptToolkitLineReader()
    assert _read(reader, terminal, "hello\r") == "hello"
    assert _read(reader, terminal, UP + "\r") == "hello"  # still walked with Up in this session
    assert list(tmp_path.iterdir()) == []
    assert isinstance(make_line_reader(interactive=False, history_file=tmp_path / "h"), PlainLineReader)
    assert not (tmp_path / "h").exists()  # piped input has no history to save


def _unwritable(tmp_path: Path, kind: str) -> Path:
    """Places no one can write a history file to, root included (permissions would not stop root)."""
    if kind == "parent is a file":
        (tmp_path / "a-file").write_text("")
        return tmp_path / "a-file" / "history"
    (tmp_path / "a-folder").mkdir()
    return tmp_path / "a-folder"  # the history path itself is a folder


@pytest.mark.parametrize("kind", ["parent is a file", "path is a folder"])
def test_an_unwritable_place_falls_back_to_memory_with_a_warning(
        tmp_path: Path, terminal: PipeInput, capsys: pytest.CaptureFixture[str], kind: str) -> None:
    bad = _unwritable(tmp_path, kind)
    reader = PromptToolkitLineReader(history_file=bad)
    err = capsys.readouterr().err
    assert f"input history not saved: cannot write {bad}" in err and f"{HISTORY_ENV}=off" in err
    assert _read(reader, terminal, "still works\r") == "still works"
    assert _read(reader, terminal, UP + "\r") == "still works"


def test_a_write_failing_mid_session_warns_once_and_the_chat_goes_on(tmp_path: Path, terminal: PipeInput) -> None:
    warnings: list[str] = []
    folder = tmp_path / "state"
    history = open_history(folder / "history", warn=warnings.append)
    (folder / "history").unlink()
    folder.rmdir()  # someone cleans up ~/.local/state while the chat runs
    history.append_string("one")
    history.append_string("two")
    assert len(warnings) == 1 and "no longer saved" in warnings[0]
    assert list(history.get_strings()) == ["one", "two"]  # kept in memory all the same


def test_bad_path_type_raises() -> None:
    with pytest.raises(TypeError, match="history path"):
        open_history(42)  # type: ignore[arg-type]
