"""Ollama's API under ``/api``: chat and generate (NDJSON lines when streamed) on the model the request names
(loaded on demand, kept ``keep_alive``), embed and embeddings (embed.py), the model list, show, version and running
models; the routes that manage model files answer that this server serves the models it was started with.

The answers' shape (NDJSON lines, Ollama's counts and timings): renderer.py.
"""

from __future__ import annotations

import hashlib
import time
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from qwen_stream.server.auth import api_key_dependency
from qwen_stream.server.capabilities import model_capabilities
from qwen_stream.server.pipeline.answer import answer
from qwen_stream.server.pipeline.bodies import openapi_body, parse_body, parse_body_and
from qwen_stream.server.pipeline.job import ChatJob, start_job
from qwen_stream.server.pool.keep_alive import FOREVER, keep_alive_seconds
from qwen_stream.server.protocols.ollama.embed import EMBED_BODIES, add_embed_routes
from qwen_stream.server.protocols.ollama.protocol import (
    ChatRequest,
    GenerateRequest,
    ModelRequest,
    OllamaError,
    ollama_error,
)
from qwen_stream.server.protocols.ollama.renderer import WIRE, Kind, OllamaRenderer, iso_at, now_iso
from qwen_stream.server.wire.error_shapes import error_responses, shaped_route
from qwen_stream.server.wire.errors import APIError

if TYPE_CHECKING:
    from qwen_stream.client.loaded_model import LoadedModel
    from qwen_stream.server.pool.model_pool import PoolEntry
    from qwen_stream.server.state import ServerState

# The Ollama API level these routes follow (clients check it before using newer fields); not our own version.
OLLAMA_API_VERSION = "0.12.0"
OLLAMA_BODIES: list[type[BaseModel]] = [ChatRequest, GenerateRequest, ModelRequest, *EMBED_BODIES]  # documented in the OpenAPI schema (see bodies.py)
# A whole answer is JSON; a streamed one (the default) NDJSON lines.
_ANSWERS: dict[int | str, dict[str, Any]] = {200: {"content": {"application/x-ndjson": {}}}}


def ollama_router(state: ServerState) -> APIRouter:
    router = APIRouter(prefix="/api", route_class=shaped_route(ollama_error), responses=error_responses(OllamaError),
                       dependencies=[Depends(api_key_dependency(state.api_keys))])

    @router.post("/chat", openapi_extra=openapi_body(ChatRequest), responses=_ANSWERS)
    async def chat(request: Request) -> Response:
        body, job = await parse_body_and(request, ChatRequest, _chat_job)
        return await _answer(state, request, "chat", body.stream, job)

    @router.post("/generate", openapi_extra=openapi_body(GenerateRequest), responses=_ANSWERS)
    async def generate(request: Request) -> Response:
        body, job = await parse_body_and(request, GenerateRequest, _generate_job)
        return await _answer(state, request, "generate", body.stream, job)

    @router.get("/tags")
    async def tags() -> JSONResponse:
        return JSONResponse({"models": [_model_entry(e) for e in state.pool.servable()]})

    @router.get("/ps")
    async def running() -> JSONResponse:
        return JSONResponse({"models": [_running_entry(e) for e in state.pool.loaded()]})

    @router.post("/show", openapi_extra=openapi_body(ModelRequest))
    async def show(request: Request) -> JSONResponse:
        body = await parse_body(request, ModelRequest)
        served = await state.resolve(body.model or body.name)
        model, name = served.model, served.name
        return JSONResponse({
            "modelfile": f"FROM {name}\n", "parameters": "", "template": _template(model),
            "details": _details(), "model_info": {"general.name": name, "context_length": model.context_length},
            "capabilities": model_capabilities(model), "modified_at": now_iso(),
        })

    @router.get("/version")
    async def version() -> JSONResponse:
        return JSONResponse({"version": OLLAMA_API_VERSION})

    add_embed_routes(router, state)
    for path, method in (("/pull", "POST"), ("/push", "POST"), ("/create", "POST"), ("/copy", "POST"),
                         ("/delete", "DELETE")):
        router.add_api_route(path, _refuse(state, path), methods=[method])
    return router


def _chat_job(body: ChatRequest) -> ChatJob:
    body.check_supported()
    # Ollama's rule for a conversation longer than the window: its oldest turns go (prompt_eval_count says what
    # the model read, and the server's log how many turns went).
    return ChatJob(body.chat_messages(), body.sampling(), body.chat_options(), model=body.model,
                   keep_alive_s=keep_alive_seconds(body.keep_alive), fold_history=True)


def _generate_job(body: GenerateRequest) -> ChatJob:
    body.check_supported()
    keep_alive = keep_alive_seconds(body.keep_alive)
    if body.suffix:  # fill in the middle (Continue's autocomplete)
        return ChatJob([], body.sampling(), model=body.model, keep_alive_s=keep_alive, fim=[body.fim_input()])
    raw = body.raw and bool(body.prompt)  # continue the prompt as is: no template, no chat options
    return ChatJob([] if not body.prompt else body.chat_messages(), body.sampling(),
                   {"thinking": body.thinking()} if not body.raw else {}, model=body.model,
                   keep_alive_s=keep_alive, prompts=[body.prompt] if raw else None, fold_history=True)


async def _answer(state: ServerState, request: Request, kind: Kind, stream: bool, job: ChatJob) -> Response:
    if not job.messages and job.prompts is None and job.fim is None:
        # Ollama's way to load a model (or, with keep_alive 0, to unload it): nothing to answer.
        if job.keep_alive_s == 0:
            entry = state.pool.expire(job.model)
            return JSONResponse(OllamaRenderer(kind, entry.display_name or str(job.model)).loaded("unload"))
        served = await state.resolve(job.model, job.keep_alive_s)
        return JSONResponse(OllamaRenderer(kind, served.name).loaded())
    started = await start_job(state, job, f"/api/{kind}")
    return await answer(request, started.gen, OllamaRenderer(kind, started.model_name), WIRE, stream=stream)


def _template(model: LoadedModel) -> str:
    """The chat template; for a FIM model inside the ``.Suffix`` branch Ollama's own templates have, which is how
    Continue tells that ``suffix`` works (the FIM layout shown is what /api/generate builds from the ids)."""
    template = getattr(model.inputs.tokenizer, "chat_template", None)
    text = template if isinstance(template, str) else ""
    if not model.inputs.supports_fim:
        return text
    return ("{{- if .Suffix }}<|fim_prefix|>{{ .Prompt }}<|fim_suffix|>{{ .Suffix }}<|fim_middle|>"
            f"{{{{- else }}}}{text}{{{{- end }}}}")


def _details() -> dict[str, Any]:
    # What the server knows of the files it loaded is not what Ollama's manifest holds: left empty, not guessed.
    return {"parent_model": "", "format": "", "family": "", "families": None, "parameter_size": "",
            "quantization_level": ""}


def _model_entry(entry: PoolEntry) -> dict[str, Any]:
    name = entry.display_name or ""
    # A stable id for the served name (Ollama's is the manifest's hash; this server has no manifest).
    digest = hashlib.sha256(name.encode()).hexdigest()
    listed = {"name": name, "model": name, "modified_at": now_iso(), "size": entry.size, "digest": digest,
              "details": _details()}
    if entry.model is not None:  # what it can do is known once it has loaded
        listed["capabilities"] = model_capabilities(entry.model)
    return listed


def _running_entry(entry: PoolEntry) -> dict[str, Any]:
    """A loaded model as /api/ps shows it: when it unloads if no request comes (Go's far future: never)."""
    left = entry.seconds_left(time.monotonic())
    expires = "2262-04-11T23:47:16Z" if left == FOREVER else iso_at(time.time() + left)
    context = entry.model.context_length if entry.model is not None else 0
    return {**_model_entry(entry), "expires_at": expires, "size_vram": 0, "context_length": context}


def _refuse(state: ServerState, path: str) -> Any:
    async def refuse() -> Response:
        names = state.pool.names()
        served = (f"one model ({names[0] if names else 'its model'})" if len(state.pool.entries) == 1
                  else f"the models it was started with ({', '.join(names)})")
        raise APIError(400, f"/api{path} is not supported: this server serves {served}, chosen when "
                            "it started (qwen-stream serve -c ...)", "invalid_request_error")

    return refuse
