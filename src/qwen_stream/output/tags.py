"""Finding markup tags in streamed text: what is safe to pass on now, and what could still become a tag.

The reasoning and tool-call parsers see text in arbitrary pieces (a tag may arrive one byte per token). Like the
stop-string matcher, they hold back only the longest tail of the text that is still the beginning of a tag.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["split_at_tag", "tag_prefix_length"]


def tag_prefix_length(text: str, tags: Sequence[str]) -> int:
    """Length of the longest tail of ``text`` that is a proper prefix of one of ``tags`` (0 if none)."""
    longest = max((len(tag) for tag in tags), default=0)
    for start in range(max(0, len(text) - longest + 1), len(text)):
        tail = text[start:]
        if any(len(tail) < len(tag) and tag.startswith(tail) for tag in tags):
            return len(text) - start
    return 0


def split_at_tag(text: str, tag: str) -> tuple[str, str | None, str]:
    """(before, tag or None, after) around the first ``tag``; without it, ``after`` holds the tail that might
    still become the tag, and ``before`` is safe to pass on."""
    at = text.find(tag)
    if at != -1:
        return text[:at], tag, text[at + len(tag):]
    keep = tag_prefix_length(text, (tag,))
    return text[: len(text) - keep], None, text[len(text) - keep:]
