"""Pooled outputs to what callers asked for: embeddings (cut to ``dimensions``, re-normalised) and rankings
(P("yes") from a judge's logits, or cosine to the query), with the prompt tokens they took. Pure numpy.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from qwen_stream.inputs.pooled_request import EmbeddingJob, RankingJob
from qwen_stream.types import TokenOutput


@dataclass(slots=True)
class Embeddings:
    vectors: np.ndarray  # float32 [inputs, width], in input order
    prompt_tokens: list[int]  # per input
    truncated: list[bool] = field(default_factory=list)  # per input: cut to fit the window

    @property
    def total_tokens(self) -> int:
        return sum(self.prompt_tokens)


@dataclass(slots=True, frozen=True)
class Ranked:
    index: int  # the document's place in the request
    score: float  # P("yes") in [0, 1] for a judge; cosine in [-1, 1] for an embedding model


@dataclass(slots=True)
class Ranking:
    results: list[Ranked]  # best first (top_n of them when asked)
    prompt_tokens: int


def embeddings(job: EmbeddingJob, outputs: list[TokenOutput]) -> Embeddings:
    vectors = np.stack([_vector(out) for out in outputs]).astype(np.float32, copy=False)
    if job.dimensions is not None:
        vectors = matryoshka(vectors, job.dimensions)
    return Embeddings(vectors, [r.info.num_tokens for r in job.requests], [r.info.truncated for r in job.requests])


def matryoshka(vectors: np.ndarray, dimensions: int) -> np.ndarray:
    """The first ``dimensions`` of each row, scaled back to unit length (a zero row stays zero)."""
    cut = vectors[:, :dimensions].astype(np.float64)
    norms = np.linalg.norm(cut, axis=1, keepdims=True)
    return (cut / np.where(norms > 0, norms, 1.0)).astype(np.float32)


def ranking(job: RankingJob, outputs: list[TokenOutput]) -> Ranking:
    if job.method == "judge":
        scores = [yes_probability(_vector(out)) for out in outputs]
    else:
        vectors = [_vector(out).astype(np.float64) for out in outputs]
        scores = [cosine(vectors[q], vectors[d]) for q, d in job.pairs]
    order = sorted(range(len(scores)), key=lambda i: (-scores[i], i)) if job.sort else list(range(len(scores)))
    results = [Ranked(i, scores[i]) for i in order][:job.top_n]
    return Ranking(results, sum(r.info.num_tokens for r in job.requests))


def yes_probability(no_yes: np.ndarray) -> float:
    """P("yes") from the ("no", "yes") logits: softmax over the two, as Qwen3-Reranker scores."""
    no, yes = float(no_yes[0]), float(no_yes[1])
    return float(1.0 / (1.0 + np.exp(no - yes)))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    denominator = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(np.dot(a, b) / denominator) if denominator > 0 else 0.0


def _vector(out: TokenOutput) -> np.ndarray:
    if out.embedding is None:
        raise ValueError(f"request {out.request_id} has no vector")
    return out.embedding
