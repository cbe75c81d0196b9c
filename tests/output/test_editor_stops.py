"""llama.cpp's editor rules on completion text, fed as a stream would feed them (growing text), with no model."""

from __future__ import annotations

from qwen_stream.output.editor_stops import IndentStop, TimeStop


def feed(rule: IndentStop, pieces: list[str]) -> str:
    """The text a reader keeps: pieces appended until the rule cuts."""
    text = ""
    for piece in pieces:
        cut = rule.cut(text + piece)
        if cut is not None:
            return (text + piece)[:cut]
        text += piece
    return text


def test_a_line_indented_less_than_n_indent_ends_the_completion_where_its_text_starts() -> None:
    pieces = ["x = 1", "\n    y", " = 2\n", "\nprint", "(x)\n"]
    assert feed(IndentStop(4), pieces) == "x = 1\n    y = 2\n"  # the empty line ends the block, as llama.cpp


def test_the_first_line_is_never_judged_and_deeper_lines_pass() -> None:
    assert feed(IndentStop(8), ["return", " x\n", "        a\n", "            b"]) == \
        "return x\n        a\n            b"


def test_indentation_arriving_token_by_token_is_judged_once_the_line_has_text() -> None:
    rule = IndentStop(4)
    assert rule.cut("a\n ") is None
    assert rule.cut("a\n  ") is None  # two spaces so far: more may follow
    assert rule.cut("a\n  b") == 4  # two spaces then text: too shallow, cut before "b"


def test_tabs_count_as_one_character_and_zero_disables_the_rule() -> None:
    assert IndentStop(1).cut("a\n\tb\nc") == 5
    assert IndentStop(0).cut("a\nb\nc") is None


def test_time_limit_ends_at_a_newline_after_the_limit_only() -> None:
    clock = TimeStop(100.0)
    assert not clock.reached("abc", 500.0)  # past the limit, but no newline to end on
    assert not clock.reached("\n", 50.0)  # a newline within the limit
    assert clock.reached("x\n", 150.0)
    assert not TimeStop(0.0).reached("\n", 10_000.0)  # 0: no limit
