"""Ollama's embeddings: ``POST /api/embed`` and the legacy ``POST /api/embeddings``, in Ollama's shapes.

``/api/embed``: ``input`` a string or a list of strings, ``truncate`` (default true, as Ollama: an input past the
window is cut; false makes it a 400), ``dimensions``, ``keep_alive``; the answer is ``{"model", "embeddings",
"total_duration", "load_duration", "prompt_eval_count"}`` with unit-length vectors. ``/api/embeddings``: ``prompt``
-> ``{"embedding": [...]}``, not normalised, as Ollama's legacy route answers. ``options`` are accepted and
change nothing (sampling does not touch a vector; ``num_ctx`` and the other loading options are the server's, as
on ``/api/chat``). An empty ``input`` or ``prompt`` is a 400 here (Ollama reads it as "just load the model").
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import Field

from qwen_stream.inputs.pooled_request import EmbeddingJob
from qwen_stream.inputs.processor import InputProcessor
from qwen_stream.server.pipeline.bodies import StrictBody, openapi_body, parse_body
from qwen_stream.server.pipeline.pooled_job import run_embeddings
from qwen_stream.server.pool.keep_alive import keep_alive_seconds
from qwen_stream.server.protocols.ollama.protocol import Options
from qwen_stream.server.state import ServerState

_NS = 1_000_000_000


class EmbedRequest(StrictBody):
    model: str = Field(min_length=1)
    input: str | list[str]
    truncate: bool = True
    dimensions: int | None = None
    options: Options | None = None  # read for nothing (a vector has no sampling), checked like chat's: unknown keys are 400s
    keep_alive: float | str | None = None


class EmbeddingsRequest(StrictBody):
    model: str = Field(min_length=1)
    prompt: str
    options: Options | None = None  # read for nothing (a vector has no sampling), checked like chat's: unknown keys are 400s
    keep_alive: float | str | None = None


EMBED_BODIES: list[type[StrictBody]] = [EmbedRequest, EmbeddingsRequest]


def add_embed_routes(router: APIRouter, state: ServerState) -> None:
    @router.post("/embed", openapi_extra=openapi_body(EmbedRequest))
    async def embed(request: Request) -> JSONResponse:
        body = await parse_body(request, EmbedRequest)

        def build(inputs: InputProcessor) -> EmbeddingJob:
            return inputs.embed(body.input, truncate=body.truncate, dimensions=body.dimensions)

        answer = await run_embeddings(state, request, "/api/embed", body.model, build,
                                      keep_alive_seconds(body.keep_alive))
        result = answer.result
        return JSONResponse({"model": answer.model_name, "embeddings": result.vectors.tolist(),
                             "total_duration": round(answer.elapsed_s * _NS), "load_duration": 0,
                             "prompt_eval_count": result.total_tokens})

    @router.post("/embeddings", openapi_extra=openapi_body(EmbeddingsRequest))
    async def embeddings(request: Request) -> JSONResponse:
        body = await parse_body(request, EmbeddingsRequest)

        def build(inputs: InputProcessor) -> EmbeddingJob:
            return inputs.embed([body.prompt], truncate=True, normalize=False)

        answer = await run_embeddings(state, request, "/api/embeddings", body.model, build,
                                      keep_alive_seconds(body.keep_alive))
        return JSONResponse({"embedding": answer.result.vectors[0].tolist()})
