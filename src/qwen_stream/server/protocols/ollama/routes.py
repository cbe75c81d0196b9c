"""Ollama's API under ``/api``: chat and generate (NDJSON lines when streamed) on the model the request names
(loaded on demand, kept ``keep_alive``), embed and embeddings (embed.py), the model list, show, version and running
models; the routes that manage model files answer that this server serves the models it was started with.

A stream is one JSON object per line; the last has ``done: true``, ``done_reason`` and the counts and timings
Ollama's clients read (nanoseconds): ``total_duration``, ``load_duration`` (0: the model was loaded at start),
``prompt_eval_count`` (the whole prompt, cached prefix included), ``prompt_eval_duration`` (to the first token),
``eval_count``, ``eval_duration``.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from qwen_stream.server.auth import api_key_dependency
from qwen_stream.server.capabilities import model_capabilities
from qwen_stream.server.pipeline.answer import Event, Wire, answer
from qwen_stream.server.pipeline.answer_blocks import AnswerBlocks, Block, BlockEvent
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
from qwen_stream.server.wire.error_shapes import error_responses, shaped_route
from qwen_stream.server.wire.errors import APIError
from qwen_stream.server.wire.sse import SSEResponse
from qwen_stream.types import FinishReason, StreamEvent

if TYPE_CHECKING:
    from qwen_stream.client.choices import TokenUsage
    from qwen_stream.client.loaded_model import LoadedModel
    from qwen_stream.server.pool.model_pool import PoolEntry
    from qwen_stream.server.state import ServerState

# The Ollama API level these routes follow (clients check it before using newer fields); not our own version.
OLLAMA_API_VERSION = "0.12.0"
_NS = 1_000_000_000
Kind = Literal["chat", "generate"]
OLLAMA_BODIES: list[type[BaseModel]] = [ChatRequest, GenerateRequest, ModelRequest, *EMBED_BODIES]  # documented in the OpenAPI schema (see bodies.py)
# A whole answer is JSON; a streamed one (the default) NDJSON lines.
_ANSWERS: dict[int | str, dict[str, Any]] = {200: {"content": {"application/x-ndjson": {}}}}


class NDJSONResponse(SSEResponse):
    """Newline-delimited JSON, streamed; closes its generator however the stream ends, as SSEResponse does."""

    media_type = "application/x-ndjson"


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
            "capabilities": model_capabilities(model), "modified_at": _now(),
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
    return await answer(request, started.gen, OllamaRenderer(kind, started.model_name), _WIRE, stream=stream)


class OllamaRenderer:
    """Ollama's chunks for one answer: a chunk per text delta, a last chunk with the counts and timings."""

    def __init__(self, kind: Kind, model: str) -> None:
        self.kind = kind
        self.model = model
        self._blocks = AnswerBlocks()
        self._final: Event = {}

    def start(self) -> list[Event]:
        return []

    def feed(self, event: StreamEvent, index: int = 0) -> list[Event]:
        return [chunk for e in self._blocks.feed(event) if (chunk := self._on_block(e)) is not None]

    def finish(self, final: StreamEvent | None, usage: TokenUsage) -> list[Event]:
        chunks = [chunk for e in self._blocks.close() if (chunk := self._on_block(e)) is not None]
        self._final = {**self._chunk(), "done": True, "done_reason": _done_reason(final), **_timings(final)}
        return [*chunks, self._final]

    def whole(self) -> Event:
        """The answer as one object: the last chunk with all the text, thinking and tool calls."""
        blocks = self._blocks.blocks
        text = "".join(block.text for block in blocks if block.kind == "text")
        thinking = "".join(block.text for block in blocks if block.kind == "reasoning")
        calls = [block for block in blocks if block.kind == "tool_call"]
        return {**self._final, **self._chunk(text, thinking, calls), "done": True}

    def loaded(self, reason: str = "load") -> Event:
        return {**self._chunk(), "done": True, "done_reason": reason}

    def _on_block(self, event: BlockEvent) -> Event | None:
        """Text and thinking stream as they come; a tool call goes out whole once written, as Ollama sends it."""
        block = event.block
        if block.kind == "tool_call":
            return self._chunk(calls=[block]) if event.kind == "stop" else None
        if event.kind != "delta" or not event.delta:
            return None
        return self._chunk(event.delta) if block.kind == "text" else self._chunk(thinking=event.delta)

    def _chunk(self, text: str = "", thinking: str = "", calls: Sequence[Block] = ()) -> Event:
        body: Event
        if self.kind == "chat":
            message: Event = {"role": "assistant", "content": text}
            if thinking:
                message["thinking"] = thinking
            if calls:
                message["tool_calls"] = [_tool_call(block) for block in calls]
            body = {"message": message}
        else:
            body = {"response": text, **({"thinking": thinking} if thinking else {})}
        return {"model": self.model, "created_at": _now(), **body, "done": False}


def _tool_call(block: Block) -> Event:
    return {"function": {"name": block.name, "arguments": block.arguments()}}


def _done_reason(final: StreamEvent | None) -> str:
    if final is None or final.finish_reason is FinishReason.ABORT:
        return "abort"
    return "length" if final.finish_reason is FinishReason.LENGTH else "stop"


def _timings(final: StreamEvent | None) -> dict[str, int]:
    if final is None:
        return {}
    ttft = final.time_to_first_token_s if final.time_to_first_token_s is not None else final.elapsed_s
    return {"total_duration": round(final.elapsed_s * _NS), "load_duration": 0,
            "prompt_eval_count": final.num_prompt_tokens, "prompt_eval_duration": round(ttft * _NS),
            "eval_count": final.num_generated_tokens, "eval_duration": round((final.elapsed_s - ttft) * _NS)}


def _encode(event: Event) -> bytes:
    return (json.dumps(event, ensure_ascii=False, separators=(",", ":")) + "\n").encode()


def _failed(message: str) -> list[Event]:
    return [{"error": message}]


_WIRE: Wire[Event] = Wire(_encode, _failed, response=NDJSONResponse)


def _now() -> str:
    return _at(time.time())


def _at(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


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
    listed = {"name": name, "model": name, "modified_at": _now(), "size": entry.size, "digest": digest,
              "details": _details()}
    if entry.model is not None:  # what it can do is known once it has loaded
        listed["capabilities"] = model_capabilities(entry.model)
    return listed


def _running_entry(entry: PoolEntry) -> dict[str, Any]:
    """A loaded model as /api/ps shows it: when it unloads if no request comes (Go's far future: never)."""
    left = entry.seconds_left(time.monotonic())
    expires = "2262-04-11T23:47:16Z" if left == FOREVER else _at(time.time() + left)
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
