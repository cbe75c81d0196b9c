"""Sampling functions on hand-made logits: greedy, temperature, top-k, top-p, penalties, seeds."""

from __future__ import annotations

import pytest
import torch

from qwen_stream.engine.batch_sampler import TOP_P_CANDIDATES
from qwen_stream.engine.sampler import (
    SamplingState,
    apply_penalties,
    candidate_distribution,
    nucleus,
    sample_row,
    token_logprobs,
)
from qwen_stream.engine.step_sampler import sample_batch
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
    alone = [sample_batch(logits[i:i + 1], [state(300, temperature=1.0, seed=i)])[0] for i in range(4)]
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


# ---- numbers that must not break the sampler (issue 10: "temperature": 1e-40 killed the engine thread) ----------


@pytest.mark.parametrize("temperature", [1e-40, 5e-324, 1e-6, 9.9e-6])
def test_tiny_temperatures_are_greedy(temperature: float) -> None:
    logits = torch.tensor([0.1, 3.0, 2.9, -1.0])
    assert SamplingParams(temperature=temperature).greedy
    assert sample_row(logits, state(4, temperature=temperature, seed=1)) == 1


@pytest.mark.parametrize("params", [
    {"temperature": 1e-5, "top_p": 0.5}, {"temperature": 1e300}, {"temperature": 1.0, "repetition_penalty": 1e-300},
    {"temperature": 1.0, "repetition_penalty": 1e300}, {"temperature": 2e-5, "top_k": 3},
    {"temperature": 1.0, "frequency_penalty": 2.0, "presence_penalty": -2.0},
])
def test_extreme_but_valid_values_always_give_a_token(params: dict[str, float]) -> None:
    logits = torch.tensor([0.0, 30.0, -30.0, 1e30, -1e30, 0.5])
    for seed in range(5):
        st = state(6, prompt=(0, 1, 3), seed=seed, **params)
        for _ in range(3):
            token = sample_row(logits, st)
            assert 0 <= token < 6
            st.record(token)


def test_nan_logits_fail_only_their_row() -> None:
    logits = torch.tensor([[0.0, 5.0, 1.0], [float("nan"), 1.0, 0.0], [2.0, 0.0, float("inf")]])
    tokens = sample_batch(logits, [state(3, temperature=0.0), state(3, temperature=0.0), state(3, temperature=1.0)])
    assert tokens[0] == 1 and tokens[2] == 2
    assert isinstance(tokens[1], ValueError) and "NaN" in str(tokens[1])


@pytest.mark.parametrize(("field", "value"), [
    ("temperature", float("inf")), ("temperature", float("nan")), ("top_p", float("nan")),
    ("repetition_penalty", float("inf")), ("repetition_penalty", 0.0), ("presence_penalty", float("nan")),
    ("seed", 2**63), ("seed", -(2**63) - 1), ("seed", 2**70),
])
def test_values_the_sampler_cannot_use_are_refused_by_name(field: str, value: float) -> None:
    from qwen_stream.types import InvalidParameterError

    with pytest.raises(InvalidParameterError, match=field) as caught:
        SamplingParams(**{field: value})  # type: ignore[arg-type]
    assert caught.value.param == field


def test_seed_extremes_seed_a_generator() -> None:
    from qwen_stream.types import wrap_seed

    for seed in (2**63 - 1, -(2**63), wrap_seed(2**63 - 1 + 1), 0):
        assert 0 <= sample_row(torch.zeros(5), state(5, temperature=1.0, seed=seed)) < 5
    assert wrap_seed(2**63) == -(2**63) and wrap_seed(5) == 5
