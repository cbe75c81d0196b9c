"""``ChatModel.choices``: the Python API's ``n``, on the tiny random model with the real tokenizer."""

from __future__ import annotations

from typing import Any

QUESTION = "Name three colours."


def test_choice_i_is_the_answer_seed_plus_i_gives(tiny_chat_model: Any) -> None:
    answers = tiny_chat_model.choices(QUESTION, n=3, temperature=1.0, seed=20, max_new_tokens=12)
    alone = [tiny_chat_model.chat(QUESTION, temperature=1.0, seed=20 + i, max_new_tokens=12)[0] for i in range(3)]
    assert [str(a) for a in answers] == [str(a) for a in alone]
    assert len({str(a) for a in answers}) > 1  # distinct seeds: the choices differ
    assert all(a.finish_reason is not None for a in answers)


def test_greedy_choices_are_the_same_answer(tiny_chat_model: Any) -> None:
    answers = tiny_chat_model.choices(QUESTION, n=2, temperature=0.0, max_new_tokens=8)
    assert str(answers[0]) == str(answers[1]) == str(tiny_chat_model.chat(QUESTION, temperature=0.0,
                                                                          max_new_tokens=8)[0])
