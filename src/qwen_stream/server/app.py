"""The FastAPI app: OpenAI-compatible routes over one ChatModel, with auth, CORS, health and metrics."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from qwen_stream.server.answer_stream import Wire, answer
from qwen_stream.server.anthropic_protocol import anthropic_error
from qwen_stream.server.anthropic_routes import ANTHROPIC_BODIES, anthropic_router
from qwen_stream.server.auth import api_key_dependency
from qwen_stream.server.bodies import document_bodies, openapi_body, parse_body_and
from qwen_stream.server.chat import ChatRenderer, openai_stream_error
from qwen_stream.server.chat_job import ChatJob, start_job
from qwen_stream.server.completions import CompletionRenderer
from qwen_stream.server.error_shapes import error_responses
from qwen_stream.server.errors import install_error_handlers
from qwen_stream.server.fim_completions import fim_completion_job
from qwen_stream.server.infill_routes import infill_router
from qwen_stream.server.keep_alive import FOREVER
from qwen_stream.server.limits import BodySizeLimit, RequestLimits
from qwen_stream.server.metrics import CONTENT_TYPE
from qwen_stream.server.model_leases import ModelLeases
from qwen_stream.server.model_pool import ModelPool, PoolEntry
from qwen_stream.server.ollama_protocol import ollama_error
from qwen_stream.server.ollama_routes import OLLAMA_BODIES, ollama_router
from qwen_stream.server.protocol import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
    HealthResponse,
    ModelCard,
    ModelList,
    now,
)
from qwen_stream.server.response_store import DEFAULT_RESPONSE_STORE_SIZE, ResponseStore
from qwen_stream.server.responses_routes import RESPONSES_BODIES, responses_router
from qwen_stream.server.sse import DONE, sse_frame
from qwen_stream.server.state import ModelLoader, ServerState
from qwen_stream.server.tokenize import tokenize_routes

if TYPE_CHECKING:
    from qwen_stream.api import ChatModel

log = logging.getLogger("qwen_stream.server")

# OpenAI's chunks as SSE data frames, an error after the start as an {"error": ...} frame, then data: [DONE].
OPENAI_WIRE: Wire[BaseModel] = Wire(sse_frame, openai_stream_error, end=DONE)
_ERROR_RESPONSES = error_responses(ErrorResponse)


def create_app(model: ChatModel | ModelLoader | Sequence[PoolEntry], *, api_key: str | None = None,
               cors_origins: Sequence[str] | None = None, served_model_name: str | None = None,
               response_store_size: int = DEFAULT_RESPONSE_STORE_SIZE, model_aliases: Sequence[str] = (),
               limits: RequestLimits | None = None, max_tokens_cap: int | None = None,
               max_loaded_models: int | None = None, keep_alive_s: float = FOREVER,
               load_wait_s: float = 0.0) -> FastAPI:
    """Build the server app.

    ``model`` is a loaded ChatModel (the caller keeps owning it), or a zero-argument function that loads one: it
    then runs in a background thread at startup while ``/health`` answers 503 "loading", and the app shuts the
    model's engine down at exit. ``api_key`` protects the ``/v1`` routes with ``Authorization: Bearer``;
    ``cors_origins`` enables CORS for those origins (``["*"]`` for any). ``response_store_size``: how many
    finished ``/v1/responses`` answers are kept for ``previous_response_id`` (least recently used dropped first).
    An OpenAI request's ``model`` must be the served name, the model's own name or one of ``model_aliases``
    (else 404). ``limits`` bound each request's size; ``max_tokens_cap`` bounds the answer of a request without
    ``max_tokens`` (default: the rest of the window).

    Several models: ``model`` is a list of ``PoolEntry`` (name, aliases, loader), the first the default; each
    loads on its first request (the first at startup), at most ``max_loaded_models`` at once (least recently
    used unloaded first), each unloaded ``keep_alive_s`` after its last request (Ollama's ``keep_alive`` per
    request); a request waits up to ``load_wait_s`` for its model to load, then gets 503 with Retry-After
    (see docs/multi-model.md).
    """
    pool = ModelPool(_pool_entries(model, served_model_name, model_aliases), max_loaded=max_loaded_models,
                     default_keep_alive_s=keep_alive_s, load_wait_s=load_wait_s)
    state = ServerState(pool, api_key or None, limits=limits, max_tokens_cap=max_tokens_cap)

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        pool.preload(pool.entries[0])  # as with one model: the port opens at once, the default loads now
        reaper = asyncio.create_task(pool.run_reaper())
        yield
        state.stop_drain_timer()
        reaper.cancel()
        pool.close()

    app = FastAPI(title="qwen-stream", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible streaming API for Qwen-family chat models.")
    app.state.server = state
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=state.limits.max_body_bytes,
                       shapes=[("/v1/messages", anthropic_error), ("/api/", ollama_error)])
    app.add_middleware(ModelLeases, release=pool.release)  # a model is never unloaded under a request
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["*"],
                           allow_headers=["*"], allow_credentials=False)
    app.include_router(_service_routes(state))
    protected = [Depends(api_key_dependency(state.api_key))]
    app.include_router(_v1_routes(state), prefix="/v1", dependencies=protected, responses=_ERROR_RESPONSES)
    app.include_router(responses_router(state, ResponseStore(response_store_size)), prefix="/v1",
                       dependencies=protected, responses=_ERROR_RESPONSES)
    app.include_router(tokenize_routes(state.model_for), dependencies=protected,
                       responses=_ERROR_RESPONSES)
    app.include_router(anthropic_router(state))
    app.include_router(ollama_router(state))
    app.include_router(infill_router(state), responses=_ERROR_RESPONSES)
    document_bodies(app, [ChatCompletionRequest, CompletionRequest, *RESPONSES_BODIES, *ANTHROPIC_BODIES,
                          *OLLAMA_BODIES])
    return app


def _service_routes(state: ServerState) -> APIRouter:
    router = APIRouter()

    @router.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
    async def health() -> JSONResponse:
        body = state.health()
        return JSONResponse(body.model_dump(exclude_none=True), status_code=200 if body.status == "ok" else 503)

    @router.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    return router


def _v1_routes(state: ServerState) -> APIRouter:
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
                                want_logprobs=body.logprobs)
        return await answer(request, started.gen, renderer, OPENAI_WIRE, stream=body.stream)

    @router.post("/completions", response_model=CompletionResponse, openapi_extra=openapi_body(CompletionRequest),
                 responses={200: {"content": {"text/event-stream": {}}}})
    async def completions(request: Request) -> Response:
        body, job = await parse_body_and(request, CompletionRequest, _completion_job)
        if body.suffix:  # fill in the middle (Tabby, Continue's OpenAI provider)
            job = await fim_completion_job(state, body, job)
        started = await start_job(state, job, "/v1/completions")
        renderer = CompletionRenderer(started.model_name, body.prompts, body.n, started.strings, echo=body.echo,
                                      include_usage=body.include_usage, want_logprobs=body.logprobs is not None)
        return await answer(request, started.gen, renderer, OPENAI_WIRE, stream=body.stream)

    return router


def _pool_entries(model: ChatModel | ModelLoader | Sequence[PoolEntry], name: str | None,
                  aliases: Sequence[str]) -> list[PoolEntry]:
    if isinstance(model, Sequence):
        if name is not None or aliases:
            raise ValueError("several models: give each PoolEntry its name and aliases, not served_model_name")
        return list(model)
    if hasattr(model, "astream"):
        return [PoolEntry.pinned(model, name, aliases)]  # type: ignore[arg-type]
    return [PoolEntry(loader=model, name=name, aliases=frozenset(aliases))]  # type: ignore[arg-type]


def _card(entry: PoolEntry, name: str) -> ModelCard:
    """A model's card; its context length is known once it has loaded."""
    loaded = entry.model
    return ModelCard(id=name, created=now(), context_length=loaded.context_length if loaded is not None else None)


def _chat_job(body: ChatCompletionRequest) -> ChatJob:
    return ChatJob([message.as_dict() for message in body.messages], body.sampling(), body.chat_options,
                   model=body.model, n=body.n)


def _completion_job(body: CompletionRequest) -> ChatJob:
    return ChatJob([], body.sampling(), model=body.model, prompts=body.prompts, n=body.n)
