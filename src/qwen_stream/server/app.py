"""The FastAPI app: OpenAI-compatible routes over one ChatModel, with auth, CORS, health and metrics."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, Response

from qwen_stream.server.admission import respond_json, start_generation
from qwen_stream.server.anthropic_routes import anthropic_router
from qwen_stream.server.auth import api_key_dependency
from qwen_stream.server.chat import ChatReply, collect_chat, stream_chat
from qwen_stream.server.completions import CompletionReply, collect_completion, stream_completion
from qwen_stream.server.errors import APIError, install_error_handlers
from qwen_stream.server.generation import TokenStrings, build_params
from qwen_stream.server.metrics import CONTENT_TYPE, ServerMetrics
from qwen_stream.server.ollama_routes import ollama_router
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
from qwen_stream.server.responses_routes import responses_router
from qwen_stream.server.sse import SSEResponse
from qwen_stream.server.tokenize import tokenize_routes

if TYPE_CHECKING:
    from qwen_stream.api import ChatModel

log = logging.getLogger("qwen_stream.server")

ModelLoader = Callable[[], "ChatModel"]
_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 429, 500, 503)
}


class ServerState:
    """The model (or the loading of it) and what hangs off it: metrics, token strings, the served name."""

    def __init__(self, served_model_name: str | None, api_key: str | None) -> None:
        self.model: ChatModel | None = None
        self.load_error: str | None = None
        self.served_name = served_model_name
        self.api_key = api_key
        self.metrics = ServerMetrics(served_model_name or "unknown")
        self.strings: TokenStrings | None = None
        self.owns_model = False

    def set_model(self, model: ChatModel) -> None:
        self.served_name = self.served_name or model.name
        self.metrics.model_name = self.served_name
        self.metrics.track_engine(model.engine.stats)
        self.strings = TokenStrings(model.tokenizer)
        self.model = model  # last: a request that sees the model sees everything above

    def load_in_background(self, loader: ModelLoader) -> None:
        def load() -> None:
            try:
                self.set_model(loader())
            except Exception as exc:  # reported by /health and by every generating route
                log.exception("loading the model failed")
                self.load_error = f"{type(exc).__name__}: {exc}"

        self.owns_model = True
        threading.Thread(target=load, name="qwen-stream-load", daemon=True).start()

    def require_model(self) -> tuple[ChatModel, TokenStrings, str]:
        if self.model is None or self.strings is None or self.served_name is None:
            if self.load_error is not None:
                raise APIError(503, f"the model failed to load: {self.load_error}", "server_error", code="model_failed")
            raise APIError(503, "the model is still loading, retry shortly", "server_error", code="model_loading",
                           headers={"Retry-After": "5"})
        return self.model, self.strings, self.served_name


def create_app(model: ChatModel | ModelLoader, *, api_key: str | None = None,
               cors_origins: Sequence[str] | None = None, served_model_name: str | None = None,
               response_store_size: int = DEFAULT_RESPONSE_STORE_SIZE) -> FastAPI:
    """Build the server app.

    ``model`` is a loaded ChatModel (the caller keeps owning it), or a zero-argument function that loads one: it
    then runs in a background thread at startup while ``/health`` answers 503 "loading", and the app shuts the
    model's engine down at exit. ``api_key`` protects the ``/v1`` routes with ``Authorization: Bearer``;
    ``cors_origins`` enables CORS for those origins (``["*"]`` for any). ``response_store_size``: how many
    finished ``/v1/responses`` answers are kept for ``previous_response_id`` (least recently used dropped first).
    """
    state = ServerState(served_model_name, api_key or None)
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
        if state.owns_model and state.model is not None:
            state.model.close()

    app = FastAPI(title="qwen-stream", version="0.1.0", lifespan=lifespan,
                  description="OpenAI-compatible streaming API for Qwen-family chat models.")
    app.state.server = state
    install_error_handlers(app)
    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["*"],
                           allow_headers=["*"], allow_credentials=False)
    app.include_router(_service_routes(state))
    protected = [Depends(api_key_dependency(state.api_key))]
    app.include_router(_v1_routes(state), prefix="/v1", dependencies=protected, responses=_ERROR_RESPONSES)
    app.include_router(responses_router(state, ResponseStore(response_store_size)), prefix="/v1",
                       dependencies=protected, responses=_ERROR_RESPONSES)
    app.include_router(anthropic_router(state))
    app.include_router(ollama_router(state))
    app.include_router(tokenize_routes(lambda: state.require_model()[0]), dependencies=protected,
                       responses=_ERROR_RESPONSES)
    return app


def _service_routes(state: ServerState) -> APIRouter:
    router = APIRouter()

    @router.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
    async def health() -> JSONResponse:
        if state.model is not None and state.model.engine.is_alive():
            return JSONResponse(HealthResponse(status="ok", model=state.served_name).model_dump(exclude_none=True))
        if state.model is not None:  # loaded, but the engine stopped: probes must see it, not only requests
            body = HealthResponse(status="failed", model=state.served_name, detail="the engine is not running")
        else:
            body = HealthResponse(status="failed" if state.load_error else "loading", model=state.served_name,
                                  detail=state.load_error)
        return JSONResponse(body.model_dump(exclude_none=True), status_code=503)

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

    @router.post("/chat/completions", response_model=ChatCompletionResponse,
                 responses={200: {"content": {"text/event-stream": {}}}})
    async def chat_completions(body: ChatCompletionRequest, request: Request) -> Response:
        model, strings, name = state.require_model()
        messages = [message.as_dict() for message in body.messages]
        start = partial(_start_chat, model, messages, body.chat_options)
        starters = [(start, params, i == 0) for i, params in enumerate(_params(model, body))]
        gen = await start_generation(starters, state.metrics, "/v1/chat/completions")
        reply = ChatReply(model=name, include_usage=body.include_usage, want_logprobs=body.logprobs)
        if body.stream:
            return SSEResponse(stream_chat(gen, reply, strings))
        return await respond_json(request, collect_chat(gen, reply, strings))

    @router.post("/completions", response_model=CompletionResponse,
                 responses={200: {"content": {"text/event-stream": {}}}})
    async def completions(body: CompletionRequest, request: Request) -> Response:
        model, strings, name = state.require_model()
        params = _params(model, body)
        starters = [(partial(_start_completion, model, prompt), p, j == 0)
                    for prompt in body.prompts for j, p in enumerate(params)]
        gen = await start_generation(starters, state.metrics, "/v1/completions")
        echo = [prompt for prompt in body.prompts for _ in params] if body.echo else None
        reply = CompletionReply(model=name, include_usage=body.include_usage,
                                want_logprobs=body.logprobs is not None, echo_prompts=echo)
        if body.stream:
            return SSEResponse(stream_completion(gen, reply, strings))
        return await respond_json(request, collect_completion(gen, reply, strings))

    return router


def _start_chat(model: ChatModel, messages: list[dict[str, Any]], options: dict[str, Any], params: Any) -> Any:
    return model.astream(messages=messages, params=params, **options)


def _start_completion(model: ChatModel, prompt: str, params: Any) -> Any:
    return model.acomplete_stream(prompt, params=params)


def _params(model: ChatModel, body: ChatCompletionRequest | CompletionRequest) -> list[Any]:
    try:
        return build_params(model, body)
    except (ValueError, TypeError) as exc:
        raise APIError(400, str(exc), "invalid_request_error") from exc
