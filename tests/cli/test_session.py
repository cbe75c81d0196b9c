"""What each terminal-chat command does to the chat state, with no terminal and no model."""

from __future__ import annotations

from qwen_stream.cli.commands import Command
from qwen_stream.cli.session import ChatState, dropped_turns_note, execute, format_stats
from qwen_stream.types import SamplingParams


def _state() -> ChatState:
    return ChatState(params=SamplingParams(temperature=0.7, max_new_tokens=128), seed=1234,
                     history=[("你好", "你好！有什么可以帮你？"), ("2+2?", "4")])


def _run(state: ChatState, name: str, arg: str = "") -> tuple[str, bool]:
    result = execute(state, Command(name, arg))
    return "\n".join(result.lines), result.is_error


def test_help_lists_every_command() -> None:
    text, _ = _run(_state(), "help")
    for spelling in (":help", ":quit", ":clear", ":clear-his", ":clh", ":history", ":seed", ":conf",
                     ":reset-conf", ":system", ":stats"):
        assert spelling in text


def test_quit_and_clear_ask_the_loop() -> None:
    assert execute(_state(), Command("quit", "")).quit
    result = execute(_state(), Command("clear", ""))
    assert result.clear_screen and not result.quit


def test_history_shows_then_clear_history_forgets() -> None:
    state = _state()
    text, _ = _run(state, "history")
    assert "[1] User: 你好" in text and "[2] Assistant: 4" in text
    text, _ = _run(state, "clear-history")
    assert "2 turns" in text and state.history == []
    text, _ = _run(state, "history")
    assert "no conversation" in text


def test_seed_shows_sets_and_rejects() -> None:
    state = _state()
    assert "1234" in _run(state, "seed")[0]
    _run(state, "seed", "7")
    assert state.seed == 7 and state.request_params().seed == 7
    _run(state, "seed", "random")
    assert state.seed is None and state.request_params().seed is None
    text, is_error = _run(state, "seed", "x")
    assert is_error and "integer" in text and state.seed is None


def test_conf_changes_and_reset_restores() -> None:
    state = _state()
    text, is_error = _run(state, "conf", "temperature=0 max_new_tokens=16")
    assert not is_error and "Settings changed" in text
    assert (state.params.temperature, state.params.max_new_tokens) == (0.0, 16)
    text, is_error = _run(state, "conf", "top_p=7")
    assert is_error and "unchanged" in text and "top_p" in text and state.params.top_p == 1.0
    text, _ = _run(state, "conf")
    assert "max_new_tokens" in text and "16" in text
    _run(state, "reset-conf")
    assert state.params == SamplingParams(temperature=0.7, max_new_tokens=128)
    assert state.seed == 1234  # the seed is not a generation setting here: :seed owns it


def test_system_shows_sets_and_removes() -> None:
    state = _state()
    assert "model's default" in _run(state, "system")[0]
    _run(state, "system", "You answer in one word.")
    assert state.system == "You answer in one word."
    assert "one word" in _run(state, "system")[0]
    _run(state, "system", "-")
    assert state.system is None


def test_stats_toggles() -> None:
    state = _state()
    assert "on" in _run(state, "stats")[0] and state.show_stats
    assert "off" in _run(state, "stats")[0] and not state.show_stats


def test_lines_for_stats_and_dropped_turns() -> None:
    assert format_stats(0.25, 31.04, 57) == "first token 0.25 s · 31.0 tok/s · 57 tokens"
    assert format_stats(None, 0.0, 0).startswith("first token -")
    assert format_stats(0.5, 40.0, 300, (120, 90)).endswith(" · drafts 75% accepted (90/120)")
    assert format_stats(0.5, 40.0, 300, (0, 0)) == format_stats(0.5, 40.0, 300)  # nothing drafted: no mention
    assert dropped_turns_note(0) is None
    assert "1 oldest turn no longer" in (dropped_turns_note(1) or "")
    assert "3 oldest turns" in (dropped_turns_note(3) or "")


def test_think_switches_and_reports() -> None:
    state = _state()
    assert "default" in _run(state, "think")[0] and state.thinking is None
    assert "off" in _run(state, "think", "off")[0] and state.thinking is False
    assert "on" in _run(state, "think", "ON")[0] and state.thinking is True
    text, is_error = _run(state, "think", "maybe")
    assert is_error and state.thinking is True and "on or off" in text
