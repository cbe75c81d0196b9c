"""Seeds and ``n`` decided once (inputs/choices.py): no model."""

from __future__ import annotations

import pytest
import torch

from qwen_stream.errors import InvalidParameterError
from qwen_stream.inputs.choices import choice_params, with_seed
from qwen_stream.types import SEED_MAX, SamplingParams


def test_choice_i_samples_with_seed_plus_i() -> None:
    seeds = [p.seed for p in choice_params(SamplingParams(temperature=0.7, seed=41), 3)]
    assert seeds == [41, 42, 43]


def test_seeds_wrap_into_the_generators_range() -> None:
    seeds = [p.seed for p in choice_params(SamplingParams(temperature=0.7, seed=SEED_MAX), 2)]
    assert seeds[0] == SEED_MAX and seeds[1] is not None and seeds[1] < SEED_MAX


def test_an_unseeded_request_draws_one_seed_from_torch_so_set_seed_repeats_it() -> None:
    torch.manual_seed(3)
    first = [p.seed for p in choice_params(SamplingParams(temperature=0.7), 2)]
    torch.manual_seed(3)
    again = [p.seed for p in choice_params(SamplingParams(temperature=0.7), 2)]
    assert first == again and first[0] is not None and first[1] == first[0] + 1


def test_greedy_needs_no_seed() -> None:
    params = SamplingParams(temperature=0.0)
    assert with_seed(params) is params
    assert choice_params(params, 2) == [params, params]


@pytest.mark.parametrize("n", [0, -1, True, 1.5])
def test_n_must_be_a_positive_integer(n: object) -> None:
    with pytest.raises(InvalidParameterError) as error:
        choice_params(SamplingParams(), n)  # type: ignore[arg-type]
    assert error.value.param == "n"
