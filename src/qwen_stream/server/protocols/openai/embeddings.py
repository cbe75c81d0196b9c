"""OpenAI's ``POST /v1/embeddings``: the body, and the answer in OpenAI's shape.

``input``: a string, a list of strings, a list of token ids or a list of such lists (at most 2048); ``dimensions``
keeps the first n of each vector, re-normalised; ``encoding_format`` ``float`` (JSON numbers) or ``base64``
(little-endian float32 bytes, what the ``openai`` client asks for by default); ``usage`` counts prompt tokens.
Two fields of other servers are honoured too: ``input_type`` ("query" or "document": the model's prompt for it,
as Qwen3-Embedding wants for queries) and ``truncate`` (cut an input past the window instead of a 400).
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

import numpy as np
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from qwen_stream.client.vectors import Embeddings
from qwen_stream.inputs.pooled_request import EmbeddingJob
from qwen_stream.inputs.processor import InputProcessor
from qwen_stream.server.pipeline.bodies import StrictBody, openapi_body, parse_body
from qwen_stream.server.pipeline.pooled_job import run_embeddings
from qwen_stream.server.state import ServerState

ROUTE = "/v1/embeddings"


class EmbeddingRequest(StrictBody):
    HARMLESS: ClassVar[Mapping[str, str]] = {"user": "an end-user id for OpenAI's abuse detection"}

    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    input_type: Literal["query", "document"] | None = None
    truncate: bool = False

    def job_options(self) -> dict[str, Any]:
        return {"dimensions": self.dimensions, "input_type": self.input_type, "truncate": self.truncate}


def add_embeddings_route(router: APIRouter, state: ServerState) -> None:
    @router.post("/embeddings", openapi_extra=openapi_body(EmbeddingRequest))
    async def embeddings(request: Request) -> JSONResponse:
        body = await parse_body(request, EmbeddingRequest)

        def build(inputs: InputProcessor) -> EmbeddingJob:
            return inputs.embed(body.input, **body.job_options())

        answer = await run_embeddings(state, request, ROUTE, body.model, build)
        return JSONResponse(embedding_list(answer.result, answer.model_name, body.encoding_format))


def embedding_list(result: Embeddings, model: str, encoding_format: str) -> dict[str, Any]:
    """The answer: ``{"object": "list", "data": [{"object": "embedding", "index", "embedding"}], "model", "usage"}``."""
    data = [{"object": "embedding", "index": i, "embedding": encode_vector(vector, encoding_format)}
            for i, vector in enumerate(result.vectors)]
    tokens = result.total_tokens
    return {"object": "list", "data": data, "model": model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}


def encode_vector(vector: np.ndarray, encoding_format: str) -> list[float] | str:
    if encoding_format == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector.tolist()]
