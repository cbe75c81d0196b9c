"""The FastAPI app: OpenAI-compatible routes over one ChatModel, with auth, CORS, health and metrics."""

from __future__ import annotations

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
from qwen_stream.server.limits import BodySizeLimit, RequestLimits
from qwen_stream.server.metrics import CONTENT_TYPE
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


def create_app(model: ChatModel | ModelLoader, *, api_key: str | None = None,
               cors_origins: Sequence[str] | None = None, served_model_name: str | None = None,
               response_store_size: int = DEFAULT_RESPONSE_STORE_SIZE, model_aliases: Sequence[str] = (),
               limits: RequestLimits | None = None, max_tokens_cap: int | None = None) -> FastAPI:
    """Build the server app.

    ``model`` is a loaded ChatModel (the caller keeps owning it), or a zero-argument function that loads one: it
    then runs in a background thread at startup while ``/health`` answers 503 "loading", and the app shuts the
    model's engine down at exit. ``api_key`` protects the ``/v1`` routes with ``Authorization: Bearer``;
    ``cors_origins`` enables CORS for those origins (``["*"]`` for any). ``response_store_size``: how many
    finished ``/v1/responses`` answers are kept for ``previous_response_id`` (least recently used dropped first).
    An OpenAI request's ``model`` must be the served name, the model's own name or one of ``model_aliases``
    (else 404). ``limits`` bound each request's size; ``max_tokens_cap`` bounds the answer of a request without
    ``max_tokens`` (default: the rest of the window).
    """
    state = ServerState(served_model_name, api_key or None, aliases=model_aliases, limits=limits,
                        max_tokens_cap=max_tokens_cap)
    if callable(model) and not hasattr(model, "astream"):
        loader: ModelLoader | None = model
    else:
        loader = None
        state.set_model(model)  # type: ignore[arg-type]

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if loader is not None:
            state.load_in_background(loader)
        yield
        state.stop_drain_timer()
        if state.owns_model and state.model is not None:
            state.model.close()

    app = FastAPI(title="qwen-stream", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible streaming API for Qwen-family chat models.")
    app.state.server = state
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=state.limits.max_body_bytes,
                       shapes=[("/v1/messages", anthropic_error), ("/api/", ollama_error)])
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["*"],
                           allow_headers=["*"], allow_credentials=False)
    app.include_router(_service_routes(state))
    protected = [Depends(api_key_dependency(state.api_key))]
    app.include_router(_v1_routes(state), prefix="/v1", dependencies=protected, responses=_ERROR_RESPONSES)
    app.include_router(responses_router(state, ResponseStore(response_store_size)), prefix="/v1",
                       dependencies=protected, responses=_ERROR_RESPONSES)
    app.include_router(tokenize_routes(lambda: state.require_model()[0]), dependencies=protected,
                       responses=_ERROR_RESPONSES)
    app.include_router(anthropic_router(state))
    app.include_router(ollama_router(state))
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
        model, _, name = state.require_model()
        return ModelList(data=[ModelCard(id=name, created=now(), context_length=model.context_length)])

    @router.get("/models/{model_id:path}", response_model=ModelCard, responses={404: {"model": ErrorResponse}})
    async def get_model(model_id: str) -> ModelCard:
        model = state.require_model(model_id)[0]
        return ModelCard(id=model_id, created=now(), context_length=model.context_length)

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
        started = await start_job(state, job, "/v1/completions")
        renderer = CompletionRenderer(started.model_name, body.prompts, body.n, started.strings, echo=body.echo,
                                      include_usage=body.include_usage, want_logprobs=body.logprobs is not None)
        return await answer(request, started.gen, renderer, OPENAI_WIRE, stream=body.stream)

    return router


def _chat_job(body: ChatCompletionRequest) -> ChatJob:
    return ChatJob([message.as_dict() for message in body.messages], body.sampling(), body.chat_options,
                   model=body.model, n=body.n)


def _completion_job(body: CompletionRequest) -> ChatJob:
    return ChatJob([], body.sampling(), model=body.model, prompts=body.prompts, n=body.n)
