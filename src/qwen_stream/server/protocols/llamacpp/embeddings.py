"""llama-server's own ``POST /embedding`` (alias ``/embeddings``), self-contained: body, answer and error shape.

``content`` (or ``input``): a string, a list of strings, token ids or lists of them; ``embd_normalize``: -1 none,
0 max absolute (scaled to int16's range), 1 taxicab, 2 Euclidean (the default), p > 2 p-norm, as llama.cpp's
``common_embd_normalize``. The answer is llama-server's non-OpenAI shape: ``[{"index": i, "embedding": [[...]]}]``,
one pooled vector per input (llama-server gives per-token vectors only under ``--pooling none``, which this server
does not serve). Errors in llama-server's shape, ``{"error": {"code", "message", "type"}}``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import Field, model_validator

from qwen_stream.inputs.pooled_request import EmbeddingJob
from qwen_stream.inputs.processor import InputProcessor
from qwen_stream.server.auth import api_key_dependency
from qwen_stream.server.pipeline.bodies import StrictBody, openapi_body, parse_body
from qwen_stream.server.pipeline.pooled_job import run_embeddings
from qwen_stream.server.protocols.llamacpp.errors import LlamaRoute
from qwen_stream.server.state import ServerState


class EmbeddingBody(StrictBody):
    content: str | list[str] | list[int] | list[list[int]] | None = None
    input: str | list[str] | list[int] | list[list[int]] | None = None
    embd_normalize: int = Field(default=2, ge=-1)
    model: str | None = None

    @model_validator(mode="after")
    def _one_input(self) -> EmbeddingBody:
        if self.content is None and self.input is None:
            raise ValueError('"input" or "content" must be provided')
        return self

    @property
    def texts(self) -> Any:
        return self.input if self.input is not None else self.content


def llamacpp_embedding_router(state: ServerState) -> APIRouter:
    router = APIRouter(route_class=LlamaRoute, dependencies=[Depends(api_key_dependency(state.api_keys))])

    async def embedding(request: Request) -> JSONResponse:
        body = await parse_body(request, EmbeddingBody)

        def build(inputs: InputProcessor) -> EmbeddingJob:
            return inputs.embed(body.texts, normalize=False)

        answer = await run_embeddings(state, request, "/embedding", body.model, build)
        return JSONResponse([{"index": i, "embedding": [normalized(vector, body.embd_normalize).tolist()]}
                             for i, vector in enumerate(answer.result.vectors)])

    for path in ("/embedding", "/embeddings"):
        router.add_api_route(path, embedding, methods=["POST"], openapi_extra=openapi_body(EmbeddingBody))
    return router


def normalized(vector: np.ndarray, norm: int) -> np.ndarray:
    """``vector`` scaled as llama.cpp's ``common_embd_normalize(..., norm)`` scales it (a zero vector stays zero)."""
    x = vector.astype(np.float64)
    if norm < 0:
        return vector
    largest = float(np.abs(x).max(initial=0.0))
    if norm == 0:
        total = largest / 32760.0  # into int16's range
    elif norm == 1:
        total = float(np.abs(x).sum())
    elif norm == 2:
        total = float(np.sqrt((x * x).sum()))
    else:  # the p-norm, scaled by the largest value first so that a large p neither overflows nor underflows
        total = largest * float((np.abs(x / largest) ** norm).sum() ** (1.0 / norm)) if largest > 0 else 0.0
    return (x * (1.0 / total if total > 0 else 0.0)).astype(np.float32)
