"""Qwen3-style reasoning: ``<think>…</think>`` split out of the answer as it streams.

Qwen3 writes ``<think>\\n…\\n</think>\\n\\n`` before its answer; templates of the thinking-only models (and a
prompt rendered with ``enable_thinking`` on some templates) already end with ``<think>``, so the output then
starts inside the reasoning. The whitespace around the reasoning is dropped, as the template itself drops it
when the turn is sent back. Text is held back only while it could still become a tag, or while it is whitespace
that may turn out to sit right before ``</think>``.
"""

from __future__ import annotations

import enum

from qwen_stream.output.tags import split_at_tag

__all__ = ["THINK_END", "THINK_START", "ReasoningParser", "prompt_opens_reasoning"]

THINK_START = "<think>"
THINK_END = "</think>"


def prompt_opens_reasoning(prompt_text: str) -> bool:
    """Whether a rendered prompt leaves the model inside a ``<think>`` block (it ends with an unclosed one)."""
    return prompt_text.rstrip().endswith(THINK_START)


class _State(enum.Enum):
    START = "start"  # nothing but whitespace yet: a <think> may still open
    REASONING = "reasoning"
    AFTER = "after"  # just after </think>: whitespace before the answer is dropped
    CONTENT = "content"


class ReasoningParser:
    """Splits streamed text into (reasoning, content); make one per answer.

    ``push(text)`` returns the reasoning and content completed by ``text``; ``flush()`` at the end releases what
    was held back. A ``<think>`` counts only at the very start of the answer (after whitespace); a later one is
    plain content, as is everything when the answer does not start with one.
    """

    __slots__ = ("_held", "_said", "_state")

    def __init__(self, *, starts_in_reasoning: bool = False) -> None:
        self._state = _State.REASONING if starts_in_reasoning else _State.START
        self._held = ""
        self._said = False  # some reasoning was emitted: its leading whitespace is behind us

    @property
    def in_reasoning(self) -> bool:
        return self._state is _State.REASONING

    def push(self, text: str) -> tuple[str, str]:
        """(reasoning, content) that ``text`` completes; either may be ""."""
        pending, self._held = self._held + text, ""
        reasoning: list[str] = []
        content: list[str] = []
        while pending:
            pending = self._step(pending, reasoning, content)
        return "".join(reasoning), "".join(content)

    def flush(self) -> tuple[str, str]:
        """The answer ended: what was held back, as reasoning (an unclosed block) or content."""
        held, self._held = self._held, ""
        if self._state is _State.REASONING:
            return (held if self._said else held.lstrip()), ""
        if self._state is _State.AFTER:
            return "", ""
        return "", held

    def _step(self, pending: str, reasoning: list[str], content: list[str]) -> str:
        """Consume some of ``pending``; return the rest still to be looked at ("" when all is used or held)."""
        if self._state is _State.START:
            return self._step_start(pending, content)
        if self._state is _State.REASONING:
            return self._step_reasoning(pending, reasoning)
        if self._state is _State.AFTER:
            rest = pending.lstrip()
            if rest:
                self._state = _State.CONTENT
            return rest
        content.append(pending)
        return ""

    def _step_start(self, pending: str, content: list[str]) -> str:
        stripped = pending.lstrip()
        if stripped.startswith(THINK_START):
            self._state = _State.REASONING
            return stripped[len(THINK_START):]
        if THINK_START.startswith(stripped):  # whitespace and/or the start of the tag: wait
            self._held = pending
            return ""
        self._state = _State.CONTENT
        content.append(pending)
        return ""

    def _step_reasoning(self, pending: str, reasoning: list[str]) -> str:
        before, tag, after = split_at_tag(pending, THINK_END)
        if tag is not None:
            self._say(before.rstrip(), reasoning)
            self._state = _State.AFTER
            return after
        # Hold trailing whitespace too: it is dropped if </think> follows it.
        safe = before.rstrip()
        self._held = before[len(safe):] + after
        self._say(safe, reasoning)
        return ""

    def _say(self, text: str, reasoning: list[str]) -> None:
        if not self._said:
            text = text.lstrip()  # the reasoning's leading whitespace is dropped
        if text:
            self._said = True
            reasoning.append(text)

