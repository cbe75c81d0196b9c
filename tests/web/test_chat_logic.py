"""The web chat's conversation bookkeeping, with no gradio and no model."""

from __future__ import annotations

from typing import Any

import pytest

from qwen_stream.web.chat_logic import (
    STILL_ANSWERING,
    StillAnsweringError,
    accept_query,
    message_text,
    normalize,
    pop_last_turn,
    sampling_overrides,
    seed_from_ui,
    start_turn,
    to_pairs,
)

# what Gradio 6 sends back from the browser: content as a list of parts, plus UI keys
FROM_BROWSER: list[dict[str, Any]] = [
    {"role": "user", "metadata": None, "content": [{"text": "你好 🤖", "type": "text"}], "options": None},
    {"role": "assistant", "metadata": None, "content": [{"text": "Hello!", "type": "text"}], "options": None},
    {"role": "user", "content": "2+2?"},
    {"role": "assistant", "content": "4"},
]


def test_message_text_reads_every_shape() -> None:
    assert message_text("plain") == "plain"
    assert message_text([{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]) == "ab"
    assert message_text({"text": "x"}) == "x"
    assert message_text(None) == ""
    with pytest.raises(TypeError):
        message_text(3.5)


def test_normalize_keeps_role_and_text_only() -> None:
    assert normalize(FROM_BROWSER)[0] == {"role": "user", "content": "你好 🤖"}
    assert normalize(None) == []
    with pytest.raises(TypeError, match="role"):
        normalize([{"content": "no role"}])


def test_to_pairs_takes_finished_turns() -> None:
    assert to_pairs(FROM_BROWSER) == [("你好 🤖", "Hello!"), ("2+2?", "4")]
    assert to_pairs([*FROM_BROWSER, {"role": "user", "content": "pending"}]) == [("你好 🤖", "Hello!"), ("2+2?", "4")]
    assert to_pairs([]) == []


def test_start_turn_appends_question_and_empty_answer() -> None:
    chat = start_turn(FROM_BROWSER, "next")
    assert chat[-2:] == [{"role": "user", "content": "next"}, {"role": "assistant", "content": ""}]
    assert len(FROM_BROWSER) == 4  # the input is not changed


def test_pop_last_turn_for_undo_and_regenerate() -> None:
    rest, question = pop_last_turn(FROM_BROWSER)
    assert question == "2+2?" and rest == normalize(FROM_BROWSER[:2])
    rest, question = pop_last_turn([{"role": "user", "content": "only a question"}])
    assert (rest, question) == ([], "only a question")
    assert pop_last_turn([]) == ([], "")


def test_seed_box() -> None:
    assert seed_from_ui(None) is None
    assert seed_from_ui(-1) is None
    assert seed_from_ui("") is None
    assert seed_from_ui(42.0) == 42
    assert seed_from_ui("7") == 7
    with pytest.raises(ValueError, match="whole number"):
        seed_from_ui(1.5)
    with pytest.raises(ValueError, match="whole number"):
        seed_from_ui("abc")


def test_sampling_overrides() -> None:
    assert sampling_overrides(0.3, 0.9, 64.0, -1) == {"seed": None, "temperature": 0.3, "top_p": 0.9,
                                                       "max_new_tokens": 64}
    assert sampling_overrides(None, None, None, 5) == {"seed": 5}


def test_a_question_is_accepted_only_when_no_answer_streams() -> None:
    assert accept_query("  what is 2+2?\n", answering=False) == "what is 2+2?"
    assert accept_query("", answering=False) == ""
    assert accept_query(None, answering=False) == ""
    with pytest.raises(StillAnsweringError, match="still streaming") as refused:
        accept_query("a second question", answering=True)
    assert isinstance(refused.value, ValueError) and str(refused.value) == STILL_ANSWERING
    with pytest.raises(TypeError, match="must be a string"):
        accept_query(42, answering=False)  # type: ignore[arg-type]
