"""Seeds and ``n``: one request's choices, each with its own seed, decided once.

A sampled request without a seed draws one from torch's global generator, so ``transformers.set_seed()`` (as the seed
demos call it) makes the next answer reproducible; choice ``i`` of ``n`` then samples with ``seed + i``, so the
choices differ and a request that gives a seed gets the same ``n`` answers every time. Greedy choices need none.
A drawn seed is marked ``seed_drawn``: only a seed of the request's own asks the engine to answer exactly as cold
whatever its cache holds (which costs recomputing what the cache holds inexactly: engine/sched/chunk_grid.py).
"""

from __future__ import annotations

from qwen_stream.errors import InvalidParameterError
from qwen_stream.types import SamplingParams, wrap_seed


def with_seed(params: SamplingParams) -> SamplingParams:
    """``params`` with a seed: its own, or one drawn now (greedy decoding needs none)."""
    if params.seed is not None or params.greedy:
        return params
    import torch

    return params.with_(seed=int(torch.randint(0, 2**62, (1,)).item()), seed_drawn=True)


def choice_params(params: SamplingParams, n: int) -> list[SamplingParams]:
    """The parameters of each of ``n`` choices: seed + i for choice i (see the module docstring)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InvalidParameterError("n", f"n must be an integer >= 1, got {n!r}")
    seeded = with_seed(params)
    if seeded.seed is None:
        return [seeded] * n
    return [seeded if i == 0 else seeded.with_(seed=wrap_seed(seeded.seed + i)) for i in range(n)]
