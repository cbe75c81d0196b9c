"""The FastAPI app, wired: the model pool, middleware (body limits, model leases, CORS), and each protocol's routes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from fastapi import Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware

from qwen_stream.server.auth import api_key_dependency, api_keys
from qwen_stream.server.pipeline.bodies import document_bodies
from qwen_stream.server.pipeline.limits import BodySizeLimit, RequestLimits
from qwen_stream.server.pool.keep_alive import FOREVER
from qwen_stream.server.pool.leases import ModelLeases
from qwen_stream.server.pool.model_pool import ModelPool, PoolEntry
from qwen_stream.server.protocols.anthropic.protocol import anthropic_error
from qwen_stream.server.protocols.anthropic.routes import ANTHROPIC_BODIES, anthropic_router
from qwen_stream.server.protocols.infill.protocol import InfillRequest
from qwen_stream.server.protocols.infill.routes import infill_router
from qwen_stream.server.protocols.llamacpp.embeddings import EmbeddingBody, llamacpp_embedding_router
from qwen_stream.server.protocols.llamacpp.routes import LLAMACPP_BODIES, llamacpp_router
from qwen_stream.server.protocols.ollama.protocol import ollama_error
from qwen_stream.server.protocols.ollama.routes import OLLAMA_BODIES, ollama_router
from qwen_stream.server.protocols.openai.routes import OPENAI_BODIES, openai_router
from qwen_stream.server.protocols.rerank.routes import RERANK_BODIES, rerank_router
from qwen_stream.server.protocols.responses.routes import RESPONSES_BODIES, responses_router
from qwen_stream.server.protocols.responses.store import DEFAULT_RESPONSE_STORE_SIZE, ResponseStore
from qwen_stream.server.protocols.tokenize import TOKENIZE_BODIES, tokenize_routes
from qwen_stream.server.service_routes import service_router
from qwen_stream.server.state import ModelLoader, ServerState
from qwen_stream.server.wire.error_shapes import error_responses
from qwen_stream.server.wire.errors import ErrorResponse
from qwen_stream.server.wire.refusals import install_error_handlers

if TYPE_CHECKING:
    from qwen_stream.client.loaded_model import HasLoaded, LoadedModel

log = logging.getLogger("qwen_stream.server")

_ERROR_RESPONSES = error_responses(ErrorResponse)


def create_app(model: LoadedModel | HasLoaded | ModelLoader | Sequence[PoolEntry], *,
               api_key: str | Sequence[str] | None = None,
               cors_origins: Sequence[str] | None = None, served_model_name: str | None = None,
               response_store_size: int = DEFAULT_RESPONSE_STORE_SIZE, model_aliases: Sequence[str] = (),
               limits: RequestLimits | None = None, max_tokens_cap: int | None = None,
               max_loaded_models: int | None = None, keep_alive_s: float = FOREVER,
               load_wait_s: float = 0.0) -> FastAPI:
    """Build the server app.

    ``model`` is a loaded ChatModel or LoadedModel (the caller keeps owning it), or a zero-argument function that loads one: it
    then runs in a background thread at startup while ``/health`` answers 503 "loading", and the app shuts the
    model's engine down at exit. ``api_key`` (one key, or several: any opens) protects every API route with
    ``Authorization: Bearer`` (or ``x-api-key``);
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
    state = ServerState(pool, api_keys(api_key or None), limits=limits, max_tokens_cap=max_tokens_cap)

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
    app.include_router(service_router(state))
    protected = [Depends(api_key_dependency(state.api_keys))]
    app.include_router(openai_router(state), prefix="/v1", dependencies=protected, responses=_ERROR_RESPONSES)
    # Before OpenAI's routes without /v1: llama-server answers /embeddings in its own shape, as /embedding.
    app.include_router(llamacpp_embedding_router(state), responses=_ERROR_RESPONSES)
    # The same routes without /v1 (/chat/completions, /completions, /models), as llama-server and LM Studio take them.
    app.include_router(openai_router(state), dependencies=protected, responses=_ERROR_RESPONSES,
                       include_in_schema=False)
    app.include_router(responses_router(state, ResponseStore(response_store_size)), prefix="/v1",
                       dependencies=protected, responses=_ERROR_RESPONSES)
    app.include_router(tokenize_routes(state.model_for), dependencies=protected,
                       responses=_ERROR_RESPONSES)
    app.include_router(anthropic_router(state))
    app.include_router(ollama_router(state))
    app.include_router(infill_router(state), responses=_ERROR_RESPONSES)
    app.include_router(llamacpp_router(state), responses=_ERROR_RESPONSES)
    app.include_router(rerank_router(state), dependencies=protected, responses=_ERROR_RESPONSES)
    document_bodies(app, [*OPENAI_BODIES, *RESPONSES_BODIES, *ANTHROPIC_BODIES, *OLLAMA_BODIES, *TOKENIZE_BODIES,
                          InfillRequest, *LLAMACPP_BODIES, *RERANK_BODIES, EmbeddingBody])
    return app


def _pool_entries(model: LoadedModel | HasLoaded | ModelLoader | Sequence[PoolEntry], name: str | None,
                  aliases: Sequence[str]) -> list[PoolEntry]:
    if isinstance(model, Sequence):
        if name is not None or aliases:
            raise ValueError("several models: give each PoolEntry its name and aliases, not served_model_name")
        return list(model)
    if callable(model):
        return [PoolEntry(loader=model, name=name, aliases=frozenset(aliases))]
    return [PoolEntry.pinned(model, name, aliases)]
