"""Prompt-lookup drafting and the plan of how much to check: pure logic, no model."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_stream.engine.spec.drafting import DraftRate, SpeculationConfig, StepCost, ngram_draft, plan_drafts


def test_draft_continues_the_latest_earlier_occurrence() -> None:
    #           0  1  2  3  4  5  6  7  8  9 10 11
    history = [5, 6, 7, 8, 9, 1, 6, 7, 3, 4, 6, 7]
    # the last bigram (6, 7) occurred at 1 and at 6; the latest earlier one (6) is followed by 3, 4, 6, 7
    assert ngram_draft(history, 3, ngram_min=2) == [3, 4, 6]
    assert ngram_draft(history, 10, ngram_min=2) == [3, 4, 6, 7]  # never past the end of the history
    assert ngram_draft(np.array(history), 2, ngram_min=2) == [3, 4]  # numpy input too


def test_longer_ngram_wins_over_a_later_shorter_match() -> None:
    # trailing (1, 2, 3): occurs at 0 (followed by 10, 11); (2, 3) alone occurs later at 5 (followed by 20)
    history = [1, 2, 3, 10, 11, 2, 3, 20, 1, 2, 3]
    assert ngram_draft(history, 2, ngram_max=3, ngram_min=2) == [10, 11]
    assert ngram_draft(history, 2, ngram_max=2, ngram_min=2) == [20, 1]


def test_no_match_no_draft() -> None:
    assert ngram_draft([1, 2, 3, 4, 5], 4) == []
    assert ngram_draft([1, 2, 3, 1], 4) == []  # a single token is below the default minimum n-gram
    assert ngram_draft([1, 2, 3, 1, 2], 4) == []  # and so are two: they match the wrong place too often
    assert ngram_draft([1, 2, 3, 9, 1, 2, 3], 4) == [9, 1, 2, 3]
    assert ngram_draft([1, 2, 3, 1], 4, ngram_min=1) == [2, 3, 1]
    assert ngram_draft([], 4) == []
    assert ngram_draft([7], 4) == []
    assert ngram_draft([1, 2, 1, 2], 0) == []


def test_repetition_drafts_the_repeat() -> None:
    assert ngram_draft([9, 9, 9, 9, 9], 3, ngram_min=2) == [9]
    assert ngram_draft([4, 5, 4, 5, 4, 5], 4, ngram_min=2) == [4, 5]


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


def test_rate_learns_first_and_later_tokens_apart() -> None:
    rate = DraftRate()
    for _ in range(10):
        rate.update(8, 8)  # long drafts, all right
    assert rate.first > 0.75 and rate.next > 0.99
    first = rate.first
    rate.update(8, 0)  # a lookup that pointed at the wrong place
    assert rate.first < first and rate.next > 0.99
    before = rate.next
    rate.update(8, 3)  # right for a while, then the text changed
    assert rate.next < before and rate.gain(1) == rate.first and rate.gain(3) == rate.first * rate.next ** 2


def test_rate_drifts_back_to_its_prior_while_not_drafting() -> None:
    rate = DraftRate()
    for _ in range(6):
        rate.update(4, 0)
    low = rate.first
    for _ in range(100):
        rate.rest()
    assert low < rate.first < rate.prior_first
    rate.update(0, 0)  # nothing drafted counts as a rest
    with pytest.raises(ValueError):
        rate.update(2, 3)


def test_a_new_sequence_starts_from_what_the_engine_has_seen() -> None:
    engine = DraftRate()
    for _ in range(20):
        engine.update(16, 16)
    new = engine.successor()
    assert (new.first, new.next) == (engine.first, engine.next) and new is not engine
    assert (new.prior_first, new.prior_next) == (DraftRate().prior_first, DraftRate().prior_next)


def test_step_cost_is_learned_and_estimated_optimistically_between() -> None:
    cost = StepCost(max_tokens=64)
    assert cost.estimate(1) == 1.0 and cost.estimate(8) == 8.0  # nothing measured: in proportion to n
    cost.record(1, 0.08)
    cost.record(16, 0.28)
    assert cost.estimate(1) == pytest.approx(0.08) and cost.estimate(16) == pytest.approx(0.28)
    assert cost.estimate(2) == pytest.approx(0.08 * 1.05)  # just above a measured size: a little dearer
    assert cost.estimate(15) == pytest.approx(0.08 * (1 + 0.05 * 14))  # well under the line to 16: tried once
    assert cost.estimate(20) == pytest.approx(0.28 * 1.2)  # above everything measured
    cost.record(16, 0.38)
    assert cost.estimate(16) == pytest.approx(0.30)  # an average: one slow step moves it a fifth of the way
    cost.record(100, 1.0)  # past max_tokens: not kept
    cost.record(3, float("nan"))
    assert cost.estimate(3) == pytest.approx(0.08 * 1.10)
    cost.record(4, 0.082)
    assert cost.estimate(3) == pytest.approx(0.08 + 0.002 * 2 / 3)  # no dearer than the line to the next
    with pytest.raises(ValueError):
        cost.estimate(65)


def _priced(**sizes: float) -> StepCost:
    cost = StepCost(max_tokens=64)
    for n, seconds in sizes.items():
        cost.record(int(n[1:]), seconds)
    return cost


# The shape measured on the 2-core Sapphire Rapids (Qwen-1.5B Q4_K_M): steps at 8, 16 and 32 rows.
CPU = dict(n1=0.082, n2=0.119, n3=0.140, n4=0.162, n6=0.212, n8=0.259, n12=0.268, n16=0.283, n17=0.363, n24=0.407,
           n32=0.412, n33=0.485, n48=0.522, n64=0.610)


def _rate(first: float, next_: float) -> DraftRate:
    return DraftRate(first=first, next=next_)


def test_text_that_is_being_copied_fills_the_step() -> None:
    cost = _priced(**CPU)
    assert plan_drafts([_rate(0.95, 1.0)], [31], fed=1, sampled=1, cost=cost, max_tokens=64) == [31]
    # 17 tokens cost much more than 16: a draft of 16 available is cut to 15
    assert plan_drafts([_rate(0.9, 0.95)], [16], fed=1, sampled=1, cost=cost, max_tokens=64) == [15]


def test_free_text_drafts_nothing() -> None:
    cost = _priced(**CPU)
    assert plan_drafts([_rate(0.3, 0.6)], [20], fed=1, sampled=1, cost=cost, max_tokens=64) == [0]
    assert plan_drafts([_rate(0.9, 1.0)], [0], fed=1, sampled=1, cost=cost, max_tokens=64) == [0]  # no lookup
    # good enough for a short draft only
    assert 0 < plan_drafts([_rate(0.7, 0.6)], [20], fed=1, sampled=1, cost=cost, max_tokens=64)[0] <= 4


def test_the_step_is_shared_by_expected_yield() -> None:
    cost = _priced(**CPU)
    counts = plan_drafts([_rate(0.95, 1.0), _rate(0.2, 0.5), _rate(0.95, 1.0)], [20, 20, 20], fed=3, sampled=3,
                         cost=cost, max_tokens=64)
    assert counts[0] == counts[2] == 20  # the good drafts whole, the poor one at most what rows left over cost little
    assert counts[1] <= 2


def test_a_wide_compute_bound_step_drafts_nothing() -> None:
    linear = StepCost(max_tokens=64)
    for n in range(16, 65):
        linear.record(n, 0.02 * n)  # every extra row costs its share
    assert plan_drafts([_rate(0.8, 0.9)] * 16, [8] * 16, fed=16, sampled=16, cost=linear, max_tokens=64) == [0] * 16
    assert plan_drafts([_rate(1.0, 1.0)], [8], fed=64, sampled=1, cost=linear, max_tokens=64) == [0]  # step full


def test_plan_bad_arguments() -> None:
    cost = StepCost()
    with pytest.raises(ValueError):
        plan_drafts([DraftRate()], [1, 2], fed=1, sampled=1, cost=cost, max_tokens=8)
    with pytest.raises(ValueError):
        plan_drafts([DraftRate()], [1], fed=0, sampled=1, cost=cost, max_tokens=8)
    with pytest.raises(ValueError):
        SpeculationConfig(min_gain=0.5)
    with pytest.raises(ValueError):
        StepCost(0)


def test_a_draft_model_drafts_where_its_price_pays() -> None:
    cost = _priced(**CPU)
    good = [_rate(0.9, 0.9)]
    free = plan_drafts(good, [8], fed=1, sampled=1, cost=cost, max_tokens=64)
    cheap = plan_drafts(good, [8], fed=1, sampled=1, cost=cost, max_tokens=64,
                        drafting_cost=lambda counts: 0.005 * max(counts))
    dear = plan_drafts(good, [8], fed=1, sampled=1, cost=cost, max_tokens=64,
                       drafting_cost=lambda counts: 0.06 * max(counts))
    assert 0 < cheap[0] <= free[0] and dear == [0]


def test_a_draft_model_drafts_for_the_sequences_it_suits() -> None:
    cost = _priced(**CPU)
    counts = plan_drafts([_rate(0.9, 0.9), _rate(0.1, 0.3)], [8, 8], fed=2, sampled=2, cost=cost, max_tokens=64,
                         drafting_cost=lambda counts: 0.01 * max(counts) + 0.002 * sum(counts))
    assert counts[0] > 0 and counts[1] == 0
