"""Sampling functions on hand-made logits: greedy, temperature, top-k, top-p, penalties, seeds."""

from __future__ import annotations

import pytest
import torch

from qwen_stream.engine.sampler import (
    TOP_P_CANDIDATES,
    SamplingState,
    apply_penalties,
    candidate_distribution,
    nucleus,
    sample_batch,
    sample_row,
    token_logprobs,
)
from qwen_stream.types import SamplingParams


def state(vocab: int = 10, prompt: tuple[int, ...] = (), **kw: object) -> SamplingState:
    return SamplingState.create(SamplingParams(**kw), list(prompt), vocab)  # type: ignore[arg-type]


def test_greedy_picks_argmax() -> None:
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    assert sample_row(logits, state(4, temperature=0.0)) == 1
    assert sample_row(logits, state(4, temperature=1.0, top_k=1)) == 1


def test_top_k_never_leaves_the_k_best() -> None:
    logits = torch.arange(50, dtype=torch.float32) / 10
    s = state(50, temperature=5.0, top_k=3, seed=0)
    assert {sample_row(logits, s) for _ in range(300)} == {47, 48, 49}


def test_nucleus_keeps_smallest_prefix_reaching_top_p() -> None:
    probs = torch.tensor([0.5, 0.3, 0.15, 0.05])
    assert nucleus(probs, 0.8).tolist() == pytest.approx([0.5, 0.3, 0.0, 0.0])
    assert nucleus(probs, 0.81).tolist() == pytest.approx([0.5, 0.3, 0.15, 0.0])
    assert nucleus(probs, 0.1).tolist() == pytest.approx([0.5, 0.0, 0.0, 0.0])  # the best token always stays


@pytest.mark.parametrize("peaked", [True, False])
def test_top_p_with_candidates_equals_full_sort(peaked: bool) -> None:
    """The fast path (best few hundred candidates) must keep exactly the tokens a full sort keeps."""
    torch.manual_seed(0)
    vocab = 5000
    logits = torch.randn(vocab) * (8.0 if peaked else 0.5)
    params = SamplingParams(temperature=0.9, top_p=0.9)
    probs, ids = candidate_distribution(logits, params)
    assert ids is not None
    kept = {int(i) for i, p in zip(ids, probs, strict=True) if p > 0}
    full = torch.softmax(logits / 0.9, dim=-1)
    sorted_p, sorted_ids = torch.sort(full, descending=True)
    expected = {int(i) for i, p in zip(sorted_ids, nucleus(sorted_p, 0.9), strict=True) if p > 0}
    assert kept == expected
    if not peaked:
        assert len(kept) > TOP_P_CANDIDATES  # the wide case really took the full-sort path


def test_same_seed_same_tokens_and_seeds_differ() -> None:
    logits = torch.zeros(1000)

    def draw(seed: int) -> list[int]:
        s = state(1000, temperature=1.0, seed=seed)
        return [sample_row(logits, s) for _ in range(20)]

    assert draw(7) == draw(7)
    assert draw(7) != draw(8)


def test_batch_rows_are_independent_of_neighbours() -> None:
    torch.manual_seed(1)
    logits = torch.randn(4, 300)
    alone = [sample_row(logits[i], state(300, temperature=1.0, seed=i)) for i in range(4)]
    batched = sample_batch(logits, [state(300, temperature=1.0, seed=i) for i in range(4)])
    assert batched == alone


def test_repetition_penalty_covers_prompt_and_output() -> None:
    s = state(4, prompt=(0,), repetition_penalty=2.0)
    s.record(1)
    out = apply_penalties(torch.tensor([2.0, -2.0, 2.0, 1.0]), s)
    assert out.tolist() == [1.0, -4.0, 2.0, 1.0]


def test_presence_and_frequency_penalties_count_output_only() -> None:
    s = state(3, prompt=(2,), presence_penalty=0.5, frequency_penalty=0.25)
    for t in (0, 0, 1):
        s.record(t)
    out = apply_penalties(torch.zeros(3), s)
    assert out.tolist() == pytest.approx([-1.0, -0.75, 0.0])


def test_logprobs_of_raw_distribution() -> None:
    logits = torch.log(torch.tensor([0.7, 0.2, 0.1]))
    lp = token_logprobs(logits, 1, 2)
    assert lp.token_id == 1 and lp.logprob == pytest.approx(float(torch.log(torch.tensor(0.2))), abs=1e-5)
    assert [t for t, _ in lp.top] == [0, 1]


@pytest.mark.parametrize("bad", [dict(temperature=-1), dict(top_p=0.0), dict(top_p=1.5), dict(top_k=-1),
                                 dict(max_new_tokens=0), dict(repetition_penalty=0), dict(presence_penalty=3),
                                 dict(stop=("",)), dict(logprobs=21)])
def test_invalid_params_raise_value_error(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        SamplingParams(**bad)  # type: ignore[arg-type]


def test_stop_accepts_a_single_string() -> None:
    assert SamplingParams(stop="\n\n").stop == ("\n\n",)  # type: ignore[arg-type]


def test_logit_bias_moves_greedy_and_ignores_ids_past_the_vocabulary() -> None:
    from qwen_stream.engine.sampler import SamplingState, sample_batch

    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    plain = SamplingState.create(SamplingParams(temperature=0.0), [], 4)
    biased = SamplingState.create(SamplingParams(temperature=0.0, logit_bias={2: 100, 99: 5}), [], 4)
    banned = SamplingState.create(SamplingParams(temperature=0.0, logit_bias={0: -100}), [], 4)
    assert sample_batch(torch.cat([logits] * 3), [plain, biased, banned]) == [0, 2, 1]


def test_min_p_keeps_only_tokens_near_the_best() -> None:
    from qwen_stream.engine.sampler import SamplingState, sample_row

    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    params = SamplingParams(temperature=1.0, min_p=0.5, seed=3)
    picks = {sample_row(logits, SamplingState.create(params.with_(seed=s), [], 4)) for s in range(200)}
    assert picks == {0, 1}  # 0.15 and 0.05 are under half of 0.5
