"""Markdown-aware styling of a streamed answer that only ever prints forwards.

Why not rich's Markdown + Live: Live re-renders the whole answer on every delta and breaks down as soon as the
answer is taller than the terminal (lines duplicated in scrollback, flicker in a pseudo-terminal). Here each
delta is printed once, in place, and the terminal does the wrapping, so multi-line and wide (CJK) text stay
correct. The markdown that matters most in a chat is styled as it streams: fenced code blocks, headings and
`inline code`. To know what a line is, at most the first few characters of a line are held back (until it is
clear whether they open a fence or a heading); everything else is emitted the moment it arrives.

Model output is also made safe for a terminal: control characters (escape sequences, carriage returns) are
dropped, so a model cannot move the cursor or recolour the screen.
"""

from __future__ import annotations

import re

Segment = tuple[str, str]  # (text, style name); style "" is plain text

STYLE_CODE = "code"  # inside a fenced block or `inline code`
STYLE_FENCE = "fence"  # the ``` lines themselves
STYLE_HEADING = "heading"

_HEADING_RE = re.compile(r"#{1,6}[ \t]")
_MAX_HELD = 8  # a line start longer than this without a decision is plain text


def sanitize(text: str) -> str:
    """Drop terminal control characters except newline and tab ("\\r\\n" becomes "\\n")."""
    return "".join(ch for ch in text if ch in "\n\t" or (ch >= " " and ch != "\x7f" and not "\x80" <= ch < "\xa0"))


class StreamStyler:
    """Feed deltas, get back styled segments to print at once. `markdown=False` only sanitises."""

    def __init__(self, *, markdown: bool = True) -> None:
        self.markdown = markdown
        self._reset()

    def _reset(self) -> None:
        self._in_fence = False
        self._held = ""  # start of the current line, not yet classified
        self._deciding = True  # still at the start of a line
        self._line_style = ""  # style of the rest of the current line once decided
        self._inline_code = False
        self._out: list[Segment] = []

    def feed(self, delta: str) -> list[Segment]:
        text = sanitize(delta)
        if not self.markdown:
            return [(text, "")] if text else []
        for ch in text:
            self._push_char(ch)
        return self._take()

    def finish(self) -> list[Segment]:
        """The end of the answer: release any held line start and reset for the next answer."""
        if self._held:
            self._emit(self._held, STYLE_CODE if self._in_fence else "")
            self._held = ""
        out = self._take()
        self._reset()
        return out

    # ---- internals ---------------------------------------------------------------------------------------------

    def _push_char(self, ch: str) -> None:
        if ch == "\n":
            if self._deciding:
                self._classify(force=True)
            self._emit("\n", "")
            self._deciding, self._held, self._inline_code = True, "", False
            self._line_style = STYLE_CODE if self._in_fence else ""
        elif self._deciding:
            self._held += ch
            self._classify(force=False)
        else:
            self._emit_styled_char(ch)

    def _classify(self, *, force: bool) -> None:
        """Decide what the held line start is, or keep holding while it could still open a fence or heading."""
        stripped = self._held.lstrip(" ")
        could_be_more = len(self._held) <= _MAX_HELD and (
            "```".startswith(stripped) or (not self._in_fence and set(stripped) <= {"#"}))
        if could_be_more and not force:
            return
        held, self._held, self._deciding = self._held, "", False
        if stripped.startswith("```"):
            self._in_fence = not self._in_fence
            self._line_style = STYLE_FENCE
        elif self._in_fence:
            self._line_style = STYLE_CODE
        elif _HEADING_RE.match(stripped):
            self._line_style = STYLE_HEADING
        else:
            self._line_style = ""
        for held_ch in held:
            self._emit_styled_char(held_ch)

    def _emit_styled_char(self, ch: str) -> None:
        if self._line_style:
            self._emit(ch, self._line_style)
        elif ch == "`":
            self._inline_code = not self._inline_code
            self._emit(ch, STYLE_CODE)
        else:
            self._emit(ch, STYLE_CODE if self._inline_code else "")

    def _emit(self, text: str, style: str) -> None:
        if self._out and self._out[-1][1] == style:
            self._out[-1] = (self._out[-1][0] + text, style)
        else:
            self._out.append((text, style))

    def _take(self) -> list[Segment]:
        out, self._out = self._out, []
        return out
