"""The terminal chat's input history, kept in a file so that Up brings back lines from earlier sessions.

Where: ``$QWEN_STREAM_HISTORY`` when set (empty or ``off`` turns saving off), else
``$XDG_STATE_HOME/qwen-stream/history``, else ``~/.local/state/qwen-stream/history``. The file holds what the user
typed, so it is created readable by its owner only. A place that cannot be written never stops the chat: the
history is then kept in memory for the session, with one warning on stderr.

prompt_toolkit is imported here at the top, so import this module only where the prompt_toolkit reader is built.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

from prompt_toolkit.history import FileHistory, History, InMemoryHistory

HISTORY_ENV = "QWEN_STREAM_HISTORY"
OFF_VALUES = frozenset({"", "off", "none", "no", "false", "0"})

Warn = Callable[[str], None]


def default_history_path(env: Mapping[str, str] | None = None) -> Path | None:
    """The history file the environment asks for; None when it turns saving off."""
    env = os.environ if env is None else env
    chosen = env.get(HISTORY_ENV)
    if chosen is not None:
        return None if chosen.strip().lower() in OFF_VALUES else Path(chosen).expanduser()
    state = env.get("XDG_STATE_HOME", "")
    # The XDG spec says to ignore a relative XDG_STATE_HOME.
    base = Path(state) if state and Path(state).is_absolute() else Path.home() / ".local" / "state"
    return base / "qwen-stream" / "history"


def open_history(path: str | Path | None, *, warn: Warn | None = None) -> History:
    """A FileHistory on ``path`` (created as needed), or an in-memory one when ``path`` is None or unusable."""
    if path is not None and not isinstance(path, (str, Path)):
        raise TypeError(f"the history path must be a string, a Path or None, got {type(path).__name__}")
    if path is None:
        return InMemoryHistory()
    warn = warn or warn_on_stderr
    path = Path(path)
    try:
        _create_private(path)
    except OSError as exc:
        warn(f"input history not saved: cannot write {path} ({_reason(exc)}); "
             f"it lasts for this session only (set {HISTORY_ENV}=off to silence this)")
        return InMemoryHistory()
    return SafeFileHistory(path, warn)


class SafeFileHistory(FileHistory):
    """prompt_toolkit's FileHistory, except that a failing read or write warns once instead of ending the chat
    (the history directory removed mid-session, a full disk). The line stays in the in-memory history anyway."""

    def __init__(self, path: Path, warn: Warn) -> None:
        super().__init__(str(path))
        self._warn = warn
        self._failed = False

    def load_history_strings(self) -> Iterable[str]:
        try:
            return list(super().load_history_strings())
        except OSError as exc:
            self._fail(exc)
            return []

    def store_string(self, string: str) -> None:
        if self._failed:
            return
        try:
            super().store_string(string)
        except OSError as exc:
            self._fail(exc)

    def _fail(self, exc: OSError) -> None:
        self._failed = True
        self._warn(f"input history no longer saved to {self.filename!s} ({_reason(exc)})")


def _create_private(path: Path) -> None:
    """Make sure ``path`` can be appended to, creating it (and its folders) for the owner only."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def warn_on_stderr(message: str) -> None:
    print(f"qwen-stream: warning: {message}", file=sys.stderr, flush=True)
