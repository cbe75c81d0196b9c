"""What the input processor hands the engine client for the model's other outputs: embeddings and rankings.

Plain data, as inputs/request.py is for answers: one ``EngineRequest`` per text to pool (its params carry
``pooling``: pool, don't sample), and what the client does with the vectors that come back (client/vectors.py):
truncate embeddings to ``dimensions``; rank documents by P("yes") or by cosine to the query.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from qwen_stream.inputs.request import EngineRequest

# OpenAI's own limit on inputs per embeddings request; past it a request is refused before any work.
MAX_INPUTS = 2048


@dataclass(frozen=True, slots=True)
class EmbeddingJob:
    requests: list[EngineRequest]  # one per input, in input order
    dimensions: int | None = None  # keep the first n of each vector, re-normalised (Matryoshka models)


@dataclass(frozen=True, slots=True)
class RankingJob:
    """(query, document) pairs to score. ``judge``: one score request per pair (Qwen3-Reranker's prompt; its vector
    is the ("no", "yes") logits at the last position). ``cosine``: one embedding request per distinct text, and
    ``pairs`` says which two requests each pair's cosine compares (query, document)."""

    requests: list[EngineRequest]
    method: Literal["judge", "cosine"]
    pairs: list[tuple[int, int]]  # cosine: per pair, the requests of its query and its document (judge: unused)
    top_n: int | None = None  # the best n results only (None: all)
    sort: bool = True  # best first (rerank); False: in pair order (vLLM's /score)

    @property
    def count(self) -> int:
        """How many pairs are scored."""
        return len(self.requests) if self.method == "judge" else len(self.pairs)
