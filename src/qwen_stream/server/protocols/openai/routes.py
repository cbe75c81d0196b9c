"""OpenAI's routes under ``/v1``: models, chat completions and completions (FIM with ``suffix``), each on the one
request path (parse, ``start_job``, a renderer, ``answer``); and embeddings (embeddings.py)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import BaseModel

from qwen_stream.server.capabilities import model_capabilities
from qwen_stream.server.pipeline.answer import Wire, answer
from qwen_stream.server.pipeline.bodies import openapi_body, parse_body_and
from qwen_stream.server.pipeline.job import ChatJob, StartedJob, start_job
from qwen_stream.server.pool.model_pool import PoolEntry
from qwen_stream.server.protocols.openai.chat_renderer import ChatRenderer, openai_stream_error
from qwen_stream.server.protocols.openai.completion_renderer import CompletionRenderer
from qwen_stream.server.protocols.openai.embeddings import EmbeddingRequest, add_embeddings_route
from qwen_stream.server.protocols.openai.fim_completions import fim_completion_job
from qwen_stream.server.protocols.openai.protocol import (
    ChatCompletionResponse,
    CompletionResponse,
    ModelCard,
    ModelList,
    now,
    system_fingerprint,
)
from qwen_stream.server.protocols.openai.requests import ChatCompletionRequest, CompletionRequest
from qwen_stream.server.state import ServerState
from qwen_stream.server.wire.errors import ErrorResponse
from qwen_stream.server.wire.sse import DONE, sse_frame

# OpenAI's chunks as SSE data frames, an error after the start as an {"error": ...} frame, then data: [DONE].
OPENAI_WIRE: Wire[BaseModel] = Wire(sse_frame, openai_stream_error, end=DONE)
OPENAI_BODIES: list[type[BaseModel]] = [ChatCompletionRequest, CompletionRequest, EmbeddingRequest]


def openai_router(state: ServerState) -> APIRouter:
    router = APIRouter()

    @router.get("/models", response_model=ModelList)
    async def list_models() -> ModelList:
        return ModelList(data=[_card(entry, entry.display_name or "") for entry in state.pool.servable()])

    @router.get("/models/{model_id:path}", response_model=ModelCard, responses={404: {"model": ErrorResponse}})
    async def get_model(model_id: str) -> ModelCard:
        return _card(state.pool.lookup(model_id), model_id)

    @router.post("/chat/completions", response_model=ChatCompletionResponse, openapi_extra=openapi_body(
                 ChatCompletionRequest), responses={200: {"content": {"text/event-stream": {}}}})
    async def chat_completions(request: Request) -> Response:
        body, job = await parse_body_and(request, ChatCompletionRequest, _chat_job)
        started = await start_job(state, job, "/v1/chat/completions")
        renderer = ChatRenderer(started.model_name, body.n, started.strings, include_usage=body.include_usage,
                                want_logprobs=body.logprobs, fingerprint=_fingerprint(started))
        return await answer(request, started.gen, renderer, OPENAI_WIRE, stream=body.stream)

    @router.post("/completions", response_model=CompletionResponse, openapi_extra=openapi_body(CompletionRequest),
                 responses={200: {"content": {"text/event-stream": {}}}})
    async def completions(request: Request) -> Response:
        body, job = await parse_body_and(request, CompletionRequest, _completion_job)
        if body.suffix:  # fill in the middle (Tabby, Continue's OpenAI provider)
            job = fim_completion_job(body, job)
        started = await start_job(state, job, "/v1/completions")
        renderer = CompletionRenderer(started.model_name, body.prompts, body.n, started.strings, echo=body.echo,
                                      include_usage=body.include_usage, want_logprobs=body.logprobs is not None,
                                      fingerprint=_fingerprint(started))
        return await answer(request, started.gen, renderer, OPENAI_WIRE, stream=body.stream)

    add_embeddings_route(router, state)
    return router


def _card(entry: PoolEntry, name: str) -> ModelCard:
    """A model's card; its context length and what it can do are known once it has loaded."""
    loaded = entry.model
    if loaded is None:
        return ModelCard(id=name, created=now())
    return ModelCard(id=name, created=now(), context_length=loaded.context_length,
                     capabilities=model_capabilities(loaded))


def _fingerprint(started: StartedJob) -> str:
    return system_fingerprint(started.model_name, started.model.engine.name)


def _chat_job(body: ChatCompletionRequest) -> ChatJob:
    return ChatJob([message.as_dict() for message in body.messages], body.sampling(), body.chat_options,
                   model=body.model, n=body.n)


def _completion_job(body: CompletionRequest) -> ChatJob:
    return ChatJob([], body.sampling(), model=body.model, prompts=body.prompts, n=body.n)
