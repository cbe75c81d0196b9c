"""Prompt-lookup drafting and draft-length control: pure logic, no model."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_stream.engine.drafting import DraftLength, ngram_draft, share_budget, step_draft_budget


def test_draft_continues_the_latest_earlier_occurrence() -> None:
    #           0  1  2  3  4  5  6  7  8  9 10 11
    history = [5, 6, 7, 8, 9, 1, 6, 7, 3, 4, 6, 7]
    # the last bigram (6, 7) occurred at 1 and at 6; the latest earlier one (6) is followed by 3, 4, 6, 7
    assert ngram_draft(history, 3) == [3, 4, 6]
    assert ngram_draft(history, 10) == [3, 4, 6, 7]  # never past the end of the history
    assert ngram_draft(np.array(history), 2) == [3, 4]  # numpy input too


def test_longer_ngram_wins_over_a_later_shorter_match() -> None:
    # trailing (1, 2, 3): occurs at 0 (followed by 10, 11); (2, 3) alone occurs later at 5 (followed by 20)
    history = [1, 2, 3, 10, 11, 2, 3, 20, 1, 2, 3]
    assert ngram_draft(history, 2, ngram_max=3) == [10, 11]
    assert ngram_draft(history, 2, ngram_max=2) == [20, 1]


def test_no_match_no_draft() -> None:
    assert ngram_draft([1, 2, 3, 4, 5], 4) == []
    assert ngram_draft([1, 2, 3, 1], 4) == []  # a single token is below the default minimum n-gram of 2
    assert ngram_draft([1, 2, 3, 1], 4, ngram_min=1) == [2, 3, 1]
    assert ngram_draft([], 4) == []
    assert ngram_draft([7], 4) == []
    assert ngram_draft([1, 2, 1, 2], 0) == []


def test_repetition_drafts_the_repeat() -> None:
    assert ngram_draft([9, 9, 9, 9, 9], 3) == [9]
    assert ngram_draft([4, 5, 4, 5, 4, 5], 4) == [4, 5]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        ngram_draft([1, 2], -1)
    with pytest.raises(ValueError):
        ngram_draft([1, 2], 2, ngram_min=3, ngram_max=2)


def test_an_edit_is_mostly_drafted() -> None:
    """The shape of the edit workload: the answer copies the prompt with one name changed."""
    rng = np.random.default_rng(0)
    prompt = rng.integers(100, 1000, size=400).tolist()
    answer = [*prompt[:150], 7, *prompt[151:]]  # one token changed
    drafted = accepted = steps = 0
    history = list(prompt)
    i = 0
    while i < len(answer):
        history.append(answer[i])  # the model's own token of this step
        i += 1
        steps += 1
        draft = ngram_draft(history, 8)
        agree = 0
        while agree < len(draft) and i + agree < len(answer) and draft[agree] == answer[i + agree]:
            agree += 1
        drafted += len(draft)
        accepted += agree
        history.extend(answer[i:i + agree])
        i += agree
    assert steps < len(answer) / 6  # 8 drafts a step: most steps yield 9 tokens
    assert accepted / drafted > 0.85


def test_length_grows_while_drafts_are_accepted() -> None:
    length = DraftLength(max_len=16, length=2)
    seen = []
    for _ in range(8):
        n = length.wanted()
        seen.append(n)
        length.update(n, n)
    assert seen == sorted(seen) and seen[-1] == 16
    assert length.drafted == length.accepted == sum(seen)


def test_length_shrinks_to_what_was_accepted() -> None:
    length = DraftLength(max_len=16, length=8)
    length.update(8, 2)
    assert length.wanted() == 3


def test_low_acceptance_pauses_drafting_longer_each_time() -> None:
    length = DraftLength(max_len=8, length=4)
    pauses = []
    for _ in range(3):
        while (n := length.wanted()) > 0:
            length.update(n, 0)
        paused = 1
        while length.wanted() == 0:
            paused += 1
        pauses.append(paused)
        length.update(1, 0)  # the drafting after the pause fails again
    assert pauses[0] >= 2 and pauses[1] > pauses[0] and pauses[2] > pauses[1]


def test_good_drafts_after_a_pause_reset_the_back_off() -> None:
    length = DraftLength(max_len=8, length=4)
    while (n := length.wanted()) > 0:
        length.update(n, 0)
    while length.wanted() == 0:
        pass
    length.update(1, 1)
    assert length.next_pause == 4


def test_disabled_and_bad_updates() -> None:
    off = DraftLength(max_len=0)
    assert off.wanted() == 0
    with pytest.raises(ValueError):
        DraftLength(max_len=4).update(2, 3)
    with pytest.raises(ValueError):
        DraftLength(max_len=-1)


def test_step_budget_backs_off_when_the_batch_is_wide() -> None:
    assert step_draft_budget(1, 16) == 15
    assert step_draft_budget(4, 16) == 12
    assert step_draft_budget(16, 16) == 0
    assert step_draft_budget(20, 16) == 0
    with pytest.raises(ValueError):
        step_draft_budget(-1, 16)


def test_share_budget_round_robin() -> None:
    assert share_budget([8, 8], 6) == [3, 3]
    assert share_budget([1, 8, 0], 6) == [1, 5, 0]
    assert share_budget([2, 2], 10) == [2, 2]
    assert share_budget([], 5) == []
    assert share_budget([3], 0) == [0]
