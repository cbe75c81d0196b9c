"""The one answer-length rule (inputs/answer_length.py), as pure arithmetic: no model."""

from __future__ import annotations

import pytest

from qwen_stream.inputs.answer_length import USUAL_LENGTH, LengthPolicy, answer_room, longest_answer

WINDOW, USUAL = 1000, 200


def test_a_requested_length_is_kept_and_must_fit_whole() -> None:
    for policy in (USUAL_LENGTH, LengthPolicy(rest_of_window=True)):
        room = answer_room(300, policy, window=WINDOW, default=USUAL)
        assert (room.reserve, room.limit, room.required) == (300, 300, 300)
        assert room.for_prompt(600, WINDOW) == 300


def test_the_cap_cuts_a_requested_length_too() -> None:
    room = answer_room(300, LengthPolicy(rest_of_window=True, cap=16), window=WINDOW, default=USUAL)
    assert (room.reserve, room.limit, room.required) == (16, 16, 16)


def test_without_a_length_the_python_api_gets_the_usual_one() -> None:
    room = answer_room(None, USUAL_LENGTH, window=WINDOW, default=USUAL)
    assert (room.reserve, room.limit, room.required, room.flexible) == (USUAL, USUAL, USUAL, False)


def test_without_a_length_a_server_answer_may_take_the_rest_of_the_window() -> None:
    room = answer_room(None, LengthPolicy(rest_of_window=True), window=WINDOW, default=USUAL)
    assert room.reserve == USUAL  # history is folded to leave the usual room ...
    assert room.flexible and room.required == 1  # ... but a long last message may leave less
    assert room.for_prompt(100, WINDOW) == 900 and room.for_prompt(990, WINDOW) == 10


def test_the_cap_bounds_every_unasked_length() -> None:
    rest = answer_room(None, LengthPolicy(rest_of_window=True, cap=16), window=WINDOW, default=USUAL)
    assert (rest.reserve, rest.for_prompt(100, WINDOW)) == (16, 16)
    fim = answer_room(None, LengthPolicy(rest_of_window=True, cap=16).without_rest_of_window(), window=WINDOW,
                      default=USUAL)
    assert (fim.reserve, fim.limit, fim.flexible) == (16, 16, False)  # fill-in-the-middle: the cap holds too


def test_no_answer_is_longer_than_the_window_leaves() -> None:
    assert longest_answer(WINDOW) == WINDOW - 1
    room = answer_room(None, USUAL_LENGTH, window=50, default=USUAL)
    assert room.limit == 49


def test_a_cap_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="cap"):
        LengthPolicy(cap=0)
