"""Stop strings over streamed text: a stop string is never emitted, not even its first characters.

Text arrives in arbitrary chunks. We emit everything except the longest tail of the pending text that is still
the beginning of some stop string (it may turn into a stop string with the next chunk); when a stop string
appears, we emit what comes before its earliest occurrence and report the stop. Each ``push`` costs
O(len(chunk) + L) string searching plus O(L²) for the hold-back check, L being the longest stop string,
however long the text streamed so far.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["StopStringMatcher"]


class StopStringMatcher:
    """Hold back only what could still become a stop string; make one per request.

    After a stop, ``push`` returns ``("", True)`` and ``flush`` returns "": the stream is over.
    """

    __slots__ = ("_first_chars", "_held", "_matched", "_max_len", "_prefixes", "_stopped", "_stops")

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
        self._max_len = max((len(s) for s in self._stops), default=0)
        # Every proper prefix of every stop string: a pending tail in this set must be held back.
        self._prefixes = frozenset(s[:k] for s in self._stops for k in range(1, len(s)))
        self._first_chars = frozenset(s[0] for s in self._stops)
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
        match = self._earliest_match(pending)
        if match is not None:
            self._held = ""
            self._stopped = True
            cut, self._matched = match
            return pending[:cut], True
        keep = self._held_tail_length(pending)
        self._held = pending[len(pending) - keep :] if keep else ""
        return pending[: len(pending) - keep], False

    def flush(self) -> str:
        """The stream ended without a stop string: release the held-back tail."""
        held, self._held = self._held, ""
        return "" if self._stopped else held

    def _earliest_match(self, pending: str) -> tuple[int, str] | None:
        """Where the first stop string in ``pending`` starts, and which one it is."""
        # The held tail is shorter than L, so ``pending`` is the chunk plus at most L - 1 characters.
        best: tuple[int, str] | None = None
        for stop in self._stops:
            at = pending.find(stop)
            if at != -1 and (best is None or at < best[0]):
                best = (at, stop)
        return best

    def _held_tail_length(self, pending: str) -> int:
        """Length of the longest tail of ``pending`` that is a proper prefix of some stop string."""
        first = max(0, len(pending) - self._max_len + 1)
        for i in range(first, len(pending)):  # from the longest candidate tail down
            if pending[i] in self._first_chars and pending[i:] in self._prefixes:
                return len(pending) - i
        return 0
