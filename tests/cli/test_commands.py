"""Pure parsing of the terminal chat's input: commands, :seed and :conf values."""

from __future__ import annotations

import pytest

from qwen_stream.cli.commands import (
    COMMAND_ALIASES,
    Command,
    Empty,
    Query,
    UnknownCommand,
    apply_conf,
    format_conf,
    join_continued_lines,
    parse_conf_assignments,
    parse_line,
    parse_seed,
    unknown_command_message,
)
from qwen_stream.types import SamplingParams


@pytest.mark.parametrize(("line", "name"), [
    (":help", "help"), (":h", "help"), (":quit", "quit"), (":q", "quit"), (":exit", "quit"),
    (":clear", "clear"), (":cl", "clear"), (":clear-history", "clear-history"), (":clear-his", "clear-history"),
    (":clh", "clear-history"), (":history", "history"), (":his", "history"), (":seed", "seed"),
    (":conf", "conf"), (":reset-conf", "reset-conf"), (":system", "system"), (":stats", "stats"),
    ("  :Q  ", "quit"),
])
def test_every_spelling_reaches_its_command(line: str, name: str) -> None:
    assert parse_line(line) == Command(name, "")


def test_command_arguments_keep_their_text() -> None:
    assert parse_line(":seed 42") == Command("seed", "42")
    assert parse_line(":conf temperature=0.2  top_p=0.9") == Command("conf", "temperature=0.2  top_p=0.9")
    assert parse_line(":system 你是一个乐于助人的助手。\nBe brief.") == Command(
        "system", "你是一个乐于助人的助手。\nBe brief.")


def test_questions_and_empty_lines() -> None:
    assert parse_line("  What is 2+2?  ") == Query("What is 2+2?")
    assert parse_line(":) hello") == Query(":) hello")  # not a command word: a question
    assert parse_line("请给我讲一个故事") == Query("请给我讲一个故事")
    assert parse_line("   \n ") == Empty()
    with pytest.raises(TypeError):
        parse_line(None)  # type: ignore[arg-type]


def test_unknown_command_suggests_the_closest() -> None:
    parsed = parse_line(":hist")
    assert parsed == UnknownCommand(":hist", ":his")
    message = unknown_command_message(parsed)
    assert ":hist" in message and "Did you mean :his?" in message and ":help" in message
    far = parse_line(":zzzzzz")
    assert isinstance(far, UnknownCommand) and far.suggestion is None
    assert "Did you mean" not in unknown_command_message(far)


def test_alias_table_has_no_duplicates() -> None:
    spellings = [s for group in COMMAND_ALIASES.values() for s in group]
    assert len(spellings) == len(set(spellings))


def test_backslash_continues_a_line() -> None:
    assert join_continued_lines(["first\\"]) == ("first", True)
    assert join_continued_lines(["first\\", "second"]) == ("first\nsecond", False)
    assert join_continued_lines(["plain"]) == ("plain", False)


def test_parse_seed() -> None:
    assert parse_seed("7") == 7
    assert parse_seed(" random ") is None
    assert parse_seed("none") is None
    with pytest.raises(ValueError, match="integer"):
        parse_seed("abc")
    with pytest.raises(ValueError, match="integer"):
        parse_seed("-3")


def test_conf_assignments_are_typed() -> None:
    assert parse_conf_assignments("temperature=0.2 top-p=0.9 max_tokens=64") == {
        "temperature": 0.2, "top_p": 0.9, "max_new_tokens": 64}
    assert parse_conf_assignments("stop=END,\\n\\n ignore_eos=yes") == {"stop": ("END", "\n\n"), "ignore_eos": True}
    assert parse_conf_assignments("") == {}


@pytest.mark.parametrize(("arg", "message"), [
    ("temperature", "key=value"),
    ("colour=blue", "unknown setting 'colour'"),
    ("seed=3", ":seed"),
    ("max_new_tokens=lots", "max_new_tokens cannot be 'lots'"),
    ("ignore_eos=maybe", "ignore_eos cannot be"),
    ("stop='unclosed", "cannot read"),
])
def test_bad_conf_says_what_is_wrong(arg: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_conf_assignments(arg)


def test_apply_conf_validates_ranges() -> None:
    params = SamplingParams(temperature=0.7)
    changed = apply_conf(params, "temperature=0 max_new_tokens=32")
    assert (changed.temperature, changed.max_new_tokens) == (0.0, 32)
    assert params.temperature == 0.7  # the original is untouched
    with pytest.raises(ValueError, match="top_p"):
        apply_conf(params, "top_p=1.5")
    with pytest.raises(ValueError, match="nothing to change"):
        apply_conf(params, "  ")


def test_format_conf_shows_every_setting() -> None:
    lines = format_conf(SamplingParams(temperature=0.3, stop=("\n\n", "END")))
    text = "\n".join(lines)
    assert "temperature" in text and "0.3" in text
    assert "\\n\\n,END" in text
    assert len(lines) == len({line.split("=")[0] for line in lines})
