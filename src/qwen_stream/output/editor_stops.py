"""Where an editor wants a completion to end, on its text: llama.cpp's ``n_indent`` and ``t_max_predict_ms`` rules.

- Indentation: every line after the first must be indented by at least ``n_indent`` whitespace characters; the
  first line that starts with less (and has something on it) ends the completion, cut where its text begins
  (its indentation stays, as llama.cpp leaves it).
- Time: after ``t_max_predict_ms`` of generation (from the first token), the next piece of text that brings a
  newline ends it there, the newline kept (the editor then has whole lines to show).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class IndentStop:
    n_indent: int
    _from: int = 0  # where to look for the next newline: every line before it was checked

    def cut(self, text: str) -> int | None:
        """Where ``text`` (the whole completion so far, growing) must end, or None to go on."""
        if self.n_indent <= 0:
            return None
        newline = text.find("\n", self._from)
        while newline != -1:
            pos = newline + 1
            while pos < len(text) and text[pos] in " \t":
                pos += 1
            if pos == len(text):  # only indentation so far: the line is judged once something follows
                self._from = newline
                return None
            if pos - newline - 1 < self.n_indent:  # an empty line too, as llama.cpp: it ends the block
                return pos
            self._from = newline + 1
            newline = text.find("\n", self._from)
        return None


@dataclass(slots=True, frozen=True)
class TimeStop:
    t_max_predict_ms: float

    def reached(self, delta: str, generating_ms: float) -> bool:
        """True when this ``delta`` ends the completion: it brings a newline after the time limit."""
        return 0 < self.t_max_predict_ms < generating_ms and "\n" in delta
