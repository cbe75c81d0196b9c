"""Reading the user's lines: prompt_toolkit in a terminal (history on the arrow keys, saved to a file across
sessions, multi-line editing), plain input() when stdin is a pipe or a file.

Both readers raise EOFError for Ctrl-D and KeyboardInterrupt for Ctrl-C on an empty line; the chat loop quits on
either. Ctrl-C on a line with text only clears the line, as shells do.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Protocol

from qwen_stream.cli.commands import join_continued_lines

CONTINUATION_PROMPT = "... "


class LineReader(Protocol):
    def read(self, prompt: str) -> str: ...


class PlainLineReader:
    """input()-based; a line ending with a backslash continues on the next line."""

    def read(self, prompt: str) -> str:
        lines = [input(prompt)]
        while True:
            text, wants_more = join_continued_lines(lines)
            if not wants_more:
                return text
            lines.append(input(CONTINUATION_PROMPT))


class PromptToolkitLineReader:
    """Enter sends; Esc Enter, Ctrl-J or a trailing backslash add a new line; Up/Down walk the input history,
    which is kept in ``history_file`` when given (see qwen_stream.cli.history), else in memory."""

    def __init__(self, *, history_file: str | Path | None = None) -> None:
        from prompt_toolkit import PromptSession

        from qwen_stream.cli.history import open_history

        self._session: PromptSession[str] = PromptSession(
            history=open_history(history_file), key_bindings=self._key_bindings(), multiline=True,
            prompt_continuation=lambda width, line_number, wrap_count: CONTINUATION_PROMPT.rjust(width),
        )

    def read(self, prompt: str) -> str:
        return self._session.prompt(prompt)

    @staticmethod
    def _key_bindings() -> Any:
        from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent

        bindings = KeyBindings()

        @bindings.add("enter")
        def _send(event: KeyPressEvent) -> None:
            buffer = event.current_buffer
            if buffer.document.is_cursor_at_the_end and buffer.text.endswith("\\"):
                buffer.delete_before_cursor(1)  # the backslash only asked for a new line
                buffer.insert_text("\n")
            else:
                buffer.validate_and_handle()

        @bindings.add("escape", "enter")
        @bindings.add("c-j")
        def _newline(event: KeyPressEvent) -> None:
            event.current_buffer.insert_text("\n")

        @bindings.add("c-c")
        def _interrupt(event: KeyPressEvent) -> None:
            if event.current_buffer.text:
                event.current_buffer.reset()  # clear the line, stay at the prompt
            else:
                event.app.exit(exception=KeyboardInterrupt())

        return bindings


def make_line_reader(*, interactive: bool | None = None, history_file: str | Path | None = None) -> LineReader:
    """The prompt_toolkit reader when stdin and stdout are a terminal, else plain input().

    ``history_file`` is where the terminal reader saves its input history (None: memory only); piped input has
    no history to walk, so it is ignored there.
    """
    if interactive is None:
        interactive = sys.stdin.isatty() and sys.stdout.isatty()
    return PromptToolkitLineReader(history_file=history_file) if interactive else PlainLineReader()
