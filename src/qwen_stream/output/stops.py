"""Stop strings over streamed text: a stop string is never emitted, not even its first characters.

Text arrives in arbitrary chunks. We emit everything except the longest tail of the pending text that is still
the beginning of some stop string (it may turn into a stop string with the next chunk); when a stop string
appears, we emit what comes before its earliest occurrence and report the stop.

Linear time and memory: each stop string keeps a Knuth-Morris-Pratt state (how many of its first characters end
the text so far), so a ``push`` costs O(len(chunk)) per stop string and building costs O(len(stop)). The held-back
tail is the longest of those states. (An earlier version kept every prefix of every stop string in a set: a
1-million-character stop string took tens of gigabytes.)
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["StopStringMatcher"]


class _Automaton:
    """One stop string's KMP automaton: ``state`` is the length of its longest prefix ending the text fed."""

    __slots__ = ("fail", "pattern", "state")

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.fail = _failure_table(pattern)
        self.state = 0

    def feed(self, text: str) -> int:
        """Advance over ``text``; return the index in it where the stop string first ends, or -1."""
        pattern, fail, state = self.pattern, self.fail, self.state
        full = len(pattern)
        for i, char in enumerate(text):
            while state and pattern[state] != char:
                state = fail[state - 1]
            if pattern[state] == char:
                state += 1
            if state == full:
                self.state = state
                return i
        self.state = state
        return -1


def _failure_table(pattern: str) -> list[int]:
    """fail[i]: length of the longest proper prefix of pattern[:i + 1] that is also its suffix."""
    fail = [0] * len(pattern)
    k = 0
    for i in range(1, len(pattern)):
        while k and pattern[i] != pattern[k]:
            k = fail[k - 1]
        if pattern[i] == pattern[k]:
            k += 1
        fail[i] = k
    return fail


class StopStringMatcher:
    """Hold back only what could still become a stop string; make one per request.

    After a stop, ``push`` returns ``("", True)`` and ``flush`` returns "": the stream is over.
    """

    __slots__ = ("_automata", "_held", "_matched", "_stopped", "_stops")

    def __init__(self, stops: Sequence[str]) -> None:
        if isinstance(stops, str):
            stops = (stops,)  # a lone string is one stop string, not one per character
        stops = tuple(stops)
        for stop in stops:
            if not isinstance(stop, str):
                raise TypeError(f"stop strings must be str, got {type(stop).__name__}")
            if not stop:
                raise ValueError("stop strings must be non-empty")
        self._stops = tuple(dict.fromkeys(stops))  # dedupe, keep order
        self._automata = [_Automaton(s) for s in self._stops]
        self._held = ""
        self._stopped = False
        self._matched: str | None = None

    @property
    def stops(self) -> tuple[str, ...]:
        return self._stops

    @property
    def stopped(self) -> bool:
        return self._stopped

    @property
    def matched(self) -> str | None:
        """The stop string that ended the text (Anthropic's ``stop_sequence`` names it); None before a stop."""
        return self._matched

    @property
    def held(self) -> str:
        """Text held back for now because it could still be the start of a stop string."""
        return self._held

    def push(self, text: str) -> tuple[str, bool]:
        """Add streamed text; return (text safe to emit now, whether a stop string was reached)."""
        if self._stopped:
            return "", True
        if not self._stops:
            return text, False
        if not text:
            return "", False
        pending = self._held + text
        match = self._earliest_match(pending, text)
        if match is not None:
            self._held = ""
            self._stopped = True
            cut, self._matched = match
            return pending[:cut], True
        keep = max(a.state for a in self._automata)
        self._held = pending[len(pending) - keep :] if keep else ""
        return pending[: len(pending) - keep], False

    def flush(self) -> str:
        """The stream ended without a stop string: release the held-back tail."""
        held, self._held = self._held, ""
        return "" if self._stopped else held

    def _earliest_match(self, pending: str, text: str) -> tuple[int, str] | None:
        """Where the earliest-starting stop string ending in ``pending`` (held tail + ``text``) begins, and which."""
        offset = len(pending) - len(text)
        best: tuple[int, str] | None = None
        for automaton in self._automata:
            end = automaton.feed(text)
            if end != -1:
                start = offset + end + 1 - len(automaton.pattern)
                if best is None or start < best[0]:
                    best = (start, automaton.pattern)
        return best
