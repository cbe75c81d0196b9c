"""Draft verification: greedy agreement and standard speculative sampling, checked against their definitions."""

from __future__ import annotations

import pytest
import torch

from qwen_stream.engine.spec.verify import accept_greedy, position_seed, speculative_sample


def test_greedy_keeps_the_agreeing_prefix_and_the_models_next_token() -> None:
    assert accept_greedy([5, 6, 7], [5, 6, 9, 1]) == [5, 6, 9]
    assert accept_greedy([5, 6, 7], [5, 6, 7, 1]) == [5, 6, 7, 1]  # all accepted: a bonus token
    assert accept_greedy([5, 6, 7], [4, 6, 7, 1]) == [4]  # the first draft wrong: the model's token
    assert accept_greedy([], [3]) == [3]  # no draft: plain decoding
    with pytest.raises(ValueError):
        accept_greedy([1, 2], [1, 2])


def _probs(rows: list[list[float]]) -> torch.Tensor:
    t = torch.tensor(rows, dtype=torch.float32)
    return t / t.sum(-1, keepdim=True)


def _first_token_frequencies(target: torch.Tensor, draft: list[int], q: torch.Tensor | None, n: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(1)
    counts = torch.zeros(target.shape[1])
    for _ in range(n):
        counts[speculative_sample(target, draft, gen, q)[0]] += 1
    return counts / n


@pytest.mark.parametrize("draft_token", [0, 2])
def test_point_mass_drafts_keep_the_target_distribution(draft_token: int) -> None:
    target = _probs([[0.1, 0.6, 0.3], [0.2, 0.2, 0.6]])
    freq = _first_token_frequencies(target, [draft_token], None, 20000)
    assert torch.allclose(freq, target[0], atol=0.015)


def test_draft_distribution_drafts_keep_the_target_distribution() -> None:
    target = _probs([[0.5, 0.3, 0.2], [0.3, 0.3, 0.4]])
    q = _probs([[0.1, 0.1, 0.8]])
    gen = torch.Generator().manual_seed(2)
    counts = torch.zeros(3)
    n = 20000
    for _ in range(n):
        draft = int(torch.multinomial(q[0], 1, generator=gen))  # drafts really come from q
        counts[speculative_sample(target, [draft], gen, q)[0]] += 1
    assert torch.allclose(counts / n, target[0], atol=0.015)


def test_second_position_is_the_target_distribution_given_the_first() -> None:
    target = _probs([[0.0, 1.0, 0.0], [0.7, 0.1, 0.2], [1.0, 1.0, 1.0]])
    gen = torch.Generator().manual_seed(3)
    counts = torch.zeros(3)
    n = 20000
    for _ in range(n):
        out = speculative_sample(target, [1, 2], gen)
        assert out[0] == 1  # p(1) = 1: always accepted
        counts[out[1]] += 1
    assert torch.allclose(counts / n, target[1], atol=0.015)


def test_a_certain_draft_is_always_accepted_and_an_impossible_one_never() -> None:
    target = _probs([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    gen = torch.Generator().manual_seed(0)
    assert speculative_sample(target, [1, 2], gen) == [1, 2, 0]
    assert speculative_sample(target, [0, 2], gen) == [1]


def test_same_seed_same_tokens() -> None:
    target = torch.softmax(torch.randn(5, 50, generator=torch.Generator().manual_seed(9)), -1)
    draft = [int(target[i].argmax()) for i in range(4)]
    runs = [speculative_sample(target, draft, torch.Generator().manual_seed(42)) for _ in range(3)]
    assert runs[0] == runs[1] == runs[2]


def test_shapes_are_checked() -> None:
    gen = torch.Generator()
    with pytest.raises(ValueError):
        speculative_sample(torch.ones(2, 4) / 4, [1, 2], gen)
    with pytest.raises(ValueError):
        speculative_sample(torch.ones(3, 4) / 4, [1, 2], gen, torch.ones(2, 5) / 5)


def test_position_seeds_differ_by_position_and_seed() -> None:
    seeds = {position_seed(s, p) for s in range(4) for p in range(200)}
    assert len(seeds) == 800
    assert all(0 <= s < 2**63 for s in seeds)
    assert position_seed(7, 3) == position_seed(7, 3)
