"""``POST /rerank``, ``/v1/rerank``, ``/v2/rerank`` (Jina/Cohere shape) and ``POST /score``, ``/v1/score``
(vLLM's), on the one pooled path (server/pipeline/pooled_job.py), errors in OpenAI's shape as vLLM answers them."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from qwen_stream.inputs.pooled_request import RankingJob
from qwen_stream.inputs.processor import InputProcessor
from qwen_stream.server.pipeline.bodies import openapi_body, parse_body
from qwen_stream.server.pipeline.pooled_job import run_ranking
from qwen_stream.server.protocols.rerank.protocol import RerankRequest, ScoreRequest, rerank_answer, score_answer
from qwen_stream.server.state import ServerState

RERANK_BODIES: list[type[BaseModel]] = [RerankRequest, ScoreRequest]


def rerank_router(state: ServerState) -> APIRouter:
    router = APIRouter()

    async def rerank(request: Request) -> JSONResponse:
        body = await parse_body(request, RerankRequest)
        documents = body.texts()

        def build(inputs: InputProcessor) -> RankingJob:
            return inputs.rerank(body.query, documents, top_n=body.top_n, instruction=body.instruction)

        answer = await run_ranking(state, request, request.url.path, body.model, build)
        return JSONResponse(rerank_answer(answer.result, answer.model_name, documents, body.return_documents))

    async def score(request: Request) -> JSONResponse:
        body = await parse_body(request, ScoreRequest)

        def build(inputs: InputProcessor) -> RankingJob:
            return inputs.score(body.pairs(), instruction=body.instruction, sort=False)

        answer = await run_ranking(state, request, request.url.path, body.model, build)
        return JSONResponse(score_answer(answer.result, answer.model_name))

    for path in ("/rerank", "/v1/rerank", "/v2/rerank"):
        router.add_api_route(path, rerank, methods=["POST"], openapi_extra=openapi_body(RerankRequest))
    for path in ("/score", "/v1/score"):
        router.add_api_route(path, score, methods=["POST"], openapi_extra=openapi_body(ScoreRequest))
    return router
