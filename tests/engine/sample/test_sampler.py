"""Sampling functions on hand-made logits: greedy, temperature, top-k, top-p, penalties, seeds."""

from __future__ import annotations

import pytest
import torch

from qwen_stream.engine.sample.batched import TOP_P_CANDIDATES
from qwen_stream.engine.sample.per_sequence import (
    SamplingState,
    apply_penalties,
    candidate_distribution,
    nucleus,
    sample_row,
    token_logprobs,
)
from qwen_stream.engine.sample.step_rows import sample_batch
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
    from qwen_stream.engine.sample.per_sequence import SamplingState, sample_row

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
    from qwen_stream.errors import InvalidParameterError

    with pytest.raises(InvalidParameterError, match=field) as caught:
        SamplingParams(**{field: value})  # type: ignore[arg-type]
    assert caught.value.param == field


def test_seed_extremes_seed_a_generator() -> None:
    from qwen_stream.types import wrap_seed

    for seed in (2**63 - 1, -(2**63), wrap_seed(2**63 - 1 + 1), 0):
        assert 0 <= sample_row(torch.zeros(5), state(5, temperature=1.0, seed=seed)) < 5
    assert wrap_seed(2**63) == -(2**63) and wrap_seed(5) == 5


# ---- the batch sampler (batch_sampler.py) against the per-row reference ------------------------------------------

from qwen_stream.engine.sample.batched import (  # noqa: E402
    CHUNK,
    RowParams,
    argmax_rows,
    chunk_maxima,
    sample_tokens,
    topk_rows,
)
from qwen_stream.engine.sample.step_rows import SampleRow, build_overlay, row_params, sample_rows  # noqa: E402


@pytest.mark.parametrize("vocab", [50, 8 * CHUNK, 8000, 8000 + 37])
def test_argmax_through_chunk_maxima_is_torch_argmax_ties_included(vocab: int) -> None:
    torch.manual_seed(vocab)
    logits = torch.randint(0, 6, (12, vocab)).float()  # many ties: the first best index must win
    logits[3, -1] = 99.0  # the best in the tail
    logits[4] = float("-inf")
    assert torch.equal(argmax_rows(logits, chunk_maxima(logits)), torch.argmax(logits, dim=-1))


@pytest.mark.parametrize(("vocab", "k"), [(8000, 1), (8000, 20), (8000 + 37, 20), (151_936 // 4, 256), (300, 20)])
def test_topk_through_chunk_maxima_keeps_torch_topk_values(vocab: int, k: int) -> None:
    torch.manual_seed(k)
    logits = torch.randn(6, vocab) * 4
    logits[2, -5:] = 50.0  # the best few in the tail
    values, ids = topk_rows(logits, chunk_maxima(logits), k)
    expected, _ = torch.topk(logits, k)
    assert torch.equal(values, expected)
    assert torch.equal(logits.gather(1, ids), values)  # the ids are where those values are


def grid(logits: torch.Tensor, params: SamplingParams, n: int = 4000, prompt: tuple[int, ...] = (),
         output: tuple[int, ...] = ()) -> torch.Tensor:
    """Token frequencies over n evenly spaced uniforms: the batch sampler's distribution, to within 1/n."""
    st = state(logits.shape[-1], prompt, **{f: getattr(params, f) for f in _FIELDS})
    for t in output:
        st.record(t)
    rows = [SampleRow(st)] * n
    p = row_params(rows, logits.shape[-1], logits.device)
    p.uniform = (torch.arange(n, dtype=torch.float32) + 0.5) / n
    tokens, status = sample_tokens(logits.expand(n, -1).clone(), p, build_overlay(rows, logits.shape[-1],
                                                                                     logits.device))
    assert bool((status == 0).all())
    return torch.bincount(tokens, minlength=logits.shape[-1]).float() / n


_FIELDS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty",
           "logit_bias")


def reference(logits: torch.Tensor, params: SamplingParams, prompt: tuple[int, ...] = (),
              output: tuple[int, ...] = ()) -> torch.Tensor:
    """The per-row reference's exact distribution over the vocabulary."""
    from qwen_stream.engine.sample.per_sequence import apply_logit_bias, finite_scores

    st = SamplingState.create(params, list(prompt), logits.shape[-1])
    for t in output:
        st.record(t)
    probs, ids = candidate_distribution(finite_scores(apply_penalties(apply_logit_bias(logits, params), st)), params)
    dense = torch.zeros(logits.shape[-1])
    dense[ids if ids is not None else torch.arange(logits.shape[-1])] = probs
    return dense / dense.sum()


QWEN = SamplingParams(temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05)


@pytest.mark.parametrize("params", [
    QWEN, SamplingParams(temperature=1.3, top_k=7), SamplingParams(temperature=0.9, top_p=0.9),
    SamplingParams(temperature=1.0), SamplingParams(temperature=0.8, min_p=0.1),
    SamplingParams(temperature=1.0, top_k=30, top_p=0.5, min_p=0.05, presence_penalty=1.5, frequency_penalty=0.5),
    SamplingParams(temperature=1.0, repetition_penalty=3.0, logit_bias={5: 4.0, 6: -100.0, 7: 2.0}),
    SamplingParams(temperature=2.0, top_p=0.99),  # a flat row: the nucleus is wider than the candidates
])
def test_batched_distribution_equals_the_reference(params: SamplingParams) -> None:
    torch.manual_seed(0)
    vocab = 3000
    logits = torch.randn(vocab) * (0.5 if params.top_p == 0.99 else 3.0)
    logits[:10] += 6.0  # a head the prompt and output below repeat
    prompt, output = (0, 1, 2, 5), (3, 3, 4, 7)
    got = grid(logits[None, :], params, prompt=prompt, output=output)
    want = reference(logits, params, prompt, output)
    assert float((got - want).abs().max()) <= 2.5 / 4000
    assert set(got.nonzero().flatten().tolist()) <= set(want.nonzero().flatten().tolist())


def test_greedy_and_top_k_1_rows_equal_the_reference_exactly() -> None:
    torch.manual_seed(2)
    vocab = 5000
    logits = torch.randn(16, vocab) * 3
    params = [SamplingParams(temperature=0.0), SamplingParams(temperature=0.9, top_k=1, seed=4),
              SamplingParams(temperature=0.0, repetition_penalty=1.5, frequency_penalty=1.0),
              SamplingParams(temperature=0.0, logit_bias={11: 30.0})]
    states = [SamplingState.create(params[i % 4], [int(t) for t in logits[i].topk(3).indices], vocab)
              for i in range(16)]
    for i, st in enumerate(states):
        st.record(int(logits[i].argmax()))  # penalties must move these rows off their argmax
    want = [sample_row(logits[i], st) for i, st in enumerate(states)]
    assert sample_batch(logits, states) == want


def test_a_seeded_row_gets_its_tokens_whatever_its_batch_mates() -> None:
    torch.manual_seed(3)
    vocab = 4000
    logits = torch.randn(5, vocab) * 2

    def run(mates: bool) -> list[int]:
        mine = state(vocab, (1, 2, 3), temperature=0.7, top_p=0.8, top_k=20, repetition_penalty=1.05, seed=11)
        others = [state(vocab, temperature=0.0), state(vocab, (9,), temperature=1.2, presence_penalty=2.0, seed=1),
                  state(vocab, temperature=0.6, top_p=0.95)]
        tokens = []
        for position in range(30):
            rows = [SampleRow(mine, seed=1000 + position)]
            if mates:
                rows = [SampleRow(others[0]), rows[0], *(SampleRow(o, seed=position) for o in others[1:])]
            batch = logits[[1, 0, 2, 3] if mates else [0]] + position / 10  # my row's logits are always row 0
            token = sample_rows(batch, rows)[1 if mates else 0]
            assert isinstance(token, int)
            mine.record(token)
            tokens.append(token)
        return tokens

    alone = run(mates=False)
    assert alone == run(mates=True)
    assert len(set(alone)) > 3  # really sampled


def test_a_drafted_row_sees_earlier_drafts_as_generated() -> None:
    logits = torch.zeros(1, 8)
    logits[0, 2] = 1.0
    st = state(8, temperature=0.0, presence_penalty=2.0)
    assert sample_rows(logits, [SampleRow(st)]) == [2]
    assert sample_rows(logits, [SampleRow(st, drafted=(2,))]) == [0]  # 2 was drafted before this position
    assert len(st.history or ()) == 0  # the state itself is unchanged


def test_penalties_leave_the_callers_logits_as_they_came() -> None:
    torch.manual_seed(4)
    logits = torch.randn(3, 2000)
    before = logits.clone()
    states = [state(2000, (1, 5, 9), temperature=0.7, top_k=20, repetition_penalty=1.3, seed=1),
              state(2000, temperature=0.0, logit_bias={3: 50.0}), state(2000, temperature=1.0)]
    tokens = sample_batch(logits, states)
    assert tokens[1] == 3
    assert torch.equal(logits, before)


def test_nan_at_a_penalised_id_still_fails_its_row_alone() -> None:
    logits = torch.zeros(3, 500)
    logits[1, 7] = float("nan")  # 7 is in the prompt: the penalty rewrites it
    states = [state(500, (7,), temperature=0.7, top_k=20, repetition_penalty=1.05, seed=s) for s in range(3)]
    tokens = sample_batch(logits, states)
    assert isinstance(tokens[1], ValueError) and "NaN" in str(tokens[1])
    assert all(isinstance(t, int) for t in (tokens[0], tokens[2]))


def test_penalties_that_overflow_every_score_fall_back_to_the_raw_row() -> None:
    logits = torch.tensor([[-1.0, -2.0, -3.0], [1.0, 2.0, 0.5]])
    states = [state(3, (0, 1, 2), temperature=0.0, repetition_penalty=1e300), state(3, temperature=0.0)]
    assert sample_batch(logits, states) == [0, 1]  # every score -inf after the penalty: as if there were none


def test_row_params_plan_each_row() -> None:
    rows = [SampleRow(state(100, temperature=0.0)), SampleRow(state(100, temperature=1.0, top_k=5)),
            SampleRow(state(100, temperature=1.0, top_p=0.5)), SampleRow(state(100, temperature=1.0)),
            SampleRow(state(100, temperature=1.0, top_k=100))]  # top_k >= vocab: off
    p: RowParams = row_params(rows, 100, torch.device("cpu"))
    assert p.plan == ["greedy", "top_k", "top_p", "full", "full"] and p.k == [0, 5, 0, 0, 0]
