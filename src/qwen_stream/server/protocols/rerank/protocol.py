"""The rerank and score bodies and answers.

Rerank, in the shape Jina and Cohere define and Continue, Dify and Open WebUI send: ``query``, ``documents``
(strings, or ``{"text": ...}`` objects), ``top_n``, ``return_documents`` (default true, as Jina and vLLM) ->
``results[{index, relevance_score, document: {text}}]`` best first, with ``usage``. ``instruction`` (an extension)
replaces the judging prompt's task line. vLLM's score: ``text_1`` and ``text_2`` (a string or a list each: one
query against many texts, or lists paired element by element) -> ``data[{index, object: "score", score}]`` in pair
order. A relevance score is P("yes") for a chat model judging, the cosine for an embedding model.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from pydantic import BaseModel, Field

from qwen_stream.client.vectors import Ranking
from qwen_stream.errors import InvalidParameterError
from qwen_stream.server.pipeline.bodies import StrictBody


class TextDocument(BaseModel):
    text: str


class RerankRequest(StrictBody):
    model: str | None = None
    query: str
    documents: list[str | TextDocument]
    top_n: int | None = Field(default=None, ge=1)
    return_documents: bool = True
    instruction: str | None = None

    def texts(self) -> list[str]:
        return [doc if isinstance(doc, str) else doc.text for doc in self.documents]


class ScoreRequest(StrictBody):
    model: str | None = None
    text_1: str | list[str]
    text_2: str | list[str]
    instruction: str | None = None

    def pairs(self) -> list[tuple[str, str]]:
        """(query, text) pairs: one text_1 against every text_2, or the two lists element by element."""
        first = [self.text_1] if isinstance(self.text_1, str) else list(self.text_1)
        second = [self.text_2] if isinstance(self.text_2, str) else list(self.text_2)
        if len(first) == 1:
            return [(first[0], text) for text in second]
        if len(first) != len(second):
            raise InvalidParameterError("text_1", f"text_1 has {len(first)} texts and text_2 {len(second)}: give "
                                                  "one text_1, or lists of the same length")
        return list(zip(first, second, strict=True))


def rerank_answer(ranking: Ranking, model: str, documents: list[str], return_documents: bool) -> dict[str, Any]:
    results = []
    for ranked in ranking.results:
        result: dict[str, Any] = {"index": ranked.index, "relevance_score": ranked.score}
        if return_documents:
            result["document"] = {"text": documents[ranked.index]}
        results.append(result)
    usage = {"prompt_tokens": ranking.prompt_tokens, "total_tokens": ranking.prompt_tokens}
    return {"id": f"rerank-{uuid.uuid4().hex}", "model": model, "object": "list", "results": results,
            "usage": usage}


def score_answer(ranking: Ranking, model: str) -> dict[str, Any]:
    data = [{"index": ranked.index, "object": "score", "score": ranked.score} for ranked in ranking.results]
    usage = {"prompt_tokens": ranking.prompt_tokens, "total_tokens": ranking.prompt_tokens}
    return {"id": f"score-{uuid.uuid4().hex}", "object": "list", "created": int(time.time()), "model": model,
            "data": data, "usage": usage}
