"""Pooled requests in the core: what a backend can do, and a prompt's hidden states folded into one vector.

A request whose params carry ``pooling`` (types.PoolingParams) is prefilled like any prompt, chunk by chunk, and
never sampled. Each chunk's final hidden states ([tokens, width], from the runner) go into the sequence's
:class:`Pooler`, which keeps only what its pooling needs (a running sum, the first row, the last row), so a prompt
split over many steps pools exactly as one read whole. A score request instead reads its last position's logits of
the asked token ids. Token ids and tensors only.
"""

from __future__ import annotations

import numpy as np
import torch

from qwen_stream.errors import UnsupportedTaskError
from qwen_stream.types import PoolingParams, SamplingParams

GENERATE, EMBED, SCORE = "generate", "embed", "score"
_WHAT = {GENERATE: "generate text", EMBED: "make embeddings (it gives no hidden states)",
         SCORE: "score (it gives no logits)"}


def runner_tasks(runner: object) -> frozenset[str]:
    """What a runner can serve: text (it computes logits), embeddings (it has ``forward_with_hidden``), scores
    (logits at a prompt's last position: any runner that generates)."""
    generates = bool(getattr(runner, "can_generate", True))
    tasks = {GENERATE, SCORE} if generates else set()
    if callable(getattr(runner, "forward_with_hidden", None)):
        tasks.add(EMBED)
    return frozenset(tasks)


def request_task(params: SamplingParams) -> str:
    return params.pooling.task if params.pooling is not None else GENERATE


def check_task(params: SamplingParams, tasks: frozenset[str], backend: str) -> None:
    """UnsupportedTaskError unless ``tasks`` (what the backend serves) holds what ``params`` ask for."""
    task = request_task(params)
    if task not in tasks:
        raise UnsupportedTaskError(f"this model (on {backend}) cannot {_WHAT[task]}",
                                   code="embeddings_unsupported" if task != GENERATE else "model_not_generative")


class Pooler:
    """One pooled sequence's running state: fed each prefill chunk's hidden rows in order, then ``result``."""

    def __init__(self, params: PoolingParams) -> None:
        self.params = params
        self._sum: torch.Tensor | None = None  # mean: the rows so far, summed in float64 (order-independent enough)
        self._count = 0
        self._first: torch.Tensor | None = None
        self._last: torch.Tensor | None = None

    def add(self, rows: torch.Tensor, start_pos: int) -> None:
        """rows: [n, width] hidden states of positions start_pos .. start_pos + n - 1."""
        if not rows.shape[0]:
            return
        pooling = self.params.pooling
        if pooling == "mean":
            part = rows.double().sum(dim=0)
            self._sum = part if self._sum is None else self._sum + part
            self._count += rows.shape[0]
        elif pooling == "cls" and start_pos == 0:
            self._first = rows[0].float().clone()
        self._last = rows[-1].float().clone()

    def result(self) -> np.ndarray:
        """The pooled vector, float32 [width], unit length when asked."""
        pooling = self.params.pooling
        if pooling == "mean":
            vector = None if self._sum is None else (self._sum / self._count).float()
        else:
            vector = self._first if pooling == "cls" else self._last
        if vector is None:
            raise ValueError("no hidden states were pooled")
        return finish_vector(vector, self.params.normalize)


def finish_vector(vector: torch.Tensor, normalize: bool) -> np.ndarray:
    if not bool(torch.isfinite(vector).all()):
        raise ValueError("the model's hidden states are not finite")
    if normalize:
        vector = torch.nn.functional.normalize(vector.double(), dim=0).float()
    return vector.cpu().numpy().astype(np.float32, copy=False)


def score_vector(logits_row: torch.Tensor, token_ids: tuple[int, ...]) -> np.ndarray:
    """The last position's logits of ``token_ids`` (float32), for a score request."""
    if max(token_ids) >= logits_row.shape[-1]:
        raise ValueError(f"logits_of names token ids past the model's {logits_row.shape[-1]} logits")
    picked = logits_row[list(token_ids)].float()
    if not bool(torch.isfinite(picked).all()):
        raise ValueError("the model's logits are not finite")
    return picked.cpu().numpy().astype(np.float32, copy=False)
