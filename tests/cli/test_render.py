"""The forward-only markdown styler: every character printed once, in order, styled as it streams."""

from __future__ import annotations

from qwen_stream.cli.render import STYLE_CODE, STYLE_FENCE, STYLE_HEADING, Segment, StreamStyler, sanitize

ANSWER = "# Title\nSome `code` here.\n```python\nprint('你好 🤖')\n# not a heading\n```\nDone 完成\n"


def _run(deltas: list[str], *, markdown: bool = True) -> list[Segment]:
    styler = StreamStyler(markdown=markdown)
    segments: list[Segment] = []
    for delta in deltas:
        segments.extend(styler.feed(delta))
    segments.extend(styler.finish())
    return segments


def _styled(segments: list[Segment], style: str) -> str:
    return "".join(text for text, s in segments if s == style)


def test_text_is_kept_whole_for_any_chunking() -> None:
    for size in (1, 2, 3, 7, len(ANSWER)):
        deltas = [ANSWER[i:i + size] for i in range(0, len(ANSWER), size)]
        segments = _run(deltas)
        assert "".join(text for text, _ in segments) == ANSWER


def test_styles_follow_the_markdown() -> None:
    segments = _run(list(ANSWER))  # one character at a time, the hardest case
    assert _styled(segments, STYLE_HEADING) == "# Title"
    assert _styled(segments, STYLE_FENCE) == "```python```"
    assert "print('你好 🤖')" in _styled(segments, STYLE_CODE)
    assert "# not a heading" in _styled(segments, STYLE_CODE)  # inside a code block a # is code
    assert "`code`" in _styled(segments, STYLE_CODE)
    assert "Done 完成" in _styled(segments, "")


def test_only_a_short_line_start_is_held_back() -> None:
    styler = StreamStyler()
    assert styler.feed("``") == []  # could still open a fence
    assert styler.feed("x") == [("``", STYLE_CODE), ("x", "")]  # inline code opened and closed: x is plain
    assert styler.feed(" plain words") == [(" plain words", "")]
    assert styler.feed("\n##") == [("\n", "")]
    assert styler.feed("#") == []
    assert styler.feed(" H") == [("### H", STYLE_HEADING)]


def test_finish_releases_held_text_and_resets() -> None:
    styler = StreamStyler()
    styler.feed("```\ncode")
    assert styler.feed("\n``") == [("\n", "")]
    assert styler.finish() == [("``", STYLE_CODE)]
    assert styler.feed("after") == [("after", "")]  # a new answer starts outside any block


def test_control_characters_never_reach_the_terminal() -> None:
    assert sanitize("a\x1b[2Jb\rc\x07d\n\te\x9bf") == "a[2Jbcd\n\tef"  # ESC gone: "[2J" is inert text
    assert _run(["\x1b[31mred\x1b[0m"], markdown=False) == [("[31mred[0m", "")]
    assert _run([""], markdown=False) == []
