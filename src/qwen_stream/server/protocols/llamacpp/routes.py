"""llama.cpp's own routes: ``POST /completion`` (raw prompts, its fields and answer shape, on the one request path),
``GET /props``, ``GET /slots`` and ``POST /apply-template``; errors in llama.cpp's shape. ``/infill`` is in
protocols/infill, ``/tokenize`` and ``/detokenize`` (both vocabularies) in protocols/tokenize.py.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from qwen_stream.server.auth import api_key_dependency
from qwen_stream.server.pipeline.admission import prepare_off_loop, respond_json
from qwen_stream.server.pipeline.bodies import StrictBody, openapi_body, parse_body, parse_body_and
from qwen_stream.server.pipeline.job import ChatJob, start_job
from qwen_stream.server.protocols.llamacpp.errors import LlamaRoute
from qwen_stream.server.protocols.llamacpp.protocol import SAMPLERS, CompletionRequest
from qwen_stream.server.protocols.llamacpp.run import LlamaRun, stream, whole
from qwen_stream.server.protocols.openai.requests import ChatMessage
from qwen_stream.server.wire.errors import APIError
from qwen_stream.server.wire.sse import SSEResponse
from qwen_stream.types import SamplingParams

if TYPE_CHECKING:
    from qwen_stream.client.loaded_model import LoadedModel
    from qwen_stream.inputs.request import EngineRequest
    from qwen_stream.server.state import ServerState

ROUTE = "/completion"


class ApplyTemplateRequest(StrictBody):
    """``/apply-template``: the chat fields that make a prompt (as ``/v1/chat/completions`` takes them)."""

    model: str | None = None
    messages: list[ChatMessage]
    tools: list[dict[str, Any]] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: bool | None = None
    continue_final_message: bool | None = None


LLAMACPP_BODIES: list[type[BaseModel]] = [CompletionRequest, ApplyTemplateRequest]


def llamacpp_router(state: ServerState) -> APIRouter:
    router = APIRouter(route_class=LlamaRoute, dependencies=[Depends(api_key_dependency(state.api_keys))])

    @router.post(ROUTE, openapi_extra=openapi_body(CompletionRequest),
                 responses={200: {"content": {"text/event-stream": {}}}})
    async def completion(request: Request) -> Response:
        body, job = await parse_body_and(request, CompletionRequest, _completion_job)
        started = await start_job(state, job, ROUTE)
        engine_request = started.requests[0]
        settings = {"generation_settings": _settings(engine_request.params, body, started.model.context_length),
                    "prompt": prompt_text(started.model, engine_request)}
        run = LlamaRun(started.gen, body, started.model_name, engine_request.info.num_tokens, started.strings,
                       truncated=False, settings=settings)
        if body.stream:
            return SSEResponse(stream(run))
        return await respond_json(request, whole(run))

    @router.get("/props")
    async def props() -> JSONResponse:
        served = await state.resolve(None)
        return JSONResponse(_props(served.model, served.name))

    @router.get("/slots")
    async def slots(fail_on_no_slot: int = 0) -> JSONResponse:
        model = await state.model_for(None)
        listed = _slots(model)
        if fail_on_no_slot and all(slot["is_processing"] for slot in listed):
            raise APIError(503, "no slot available", "server_error", code="no_slot_available")
        return JSONResponse(listed)

    @router.post("/apply-template", openapi_extra=openapi_body(ApplyTemplateRequest))
    async def apply_template(request: Request) -> JSONResponse:
        body = await parse_body(request, ApplyTemplateRequest)
        model = await state.model_for(body.model)
        messages = [message.as_dict() for message in body.messages]
        options = body.model_dump(include={"tools", "chat_template_kwargs", "add_generation_prompt",
                                           "continue_final_message"})
        prompt = await prepare_off_loop(lambda: model.inputs.chat_prompt(messages, **options))
        return JSONResponse({"prompt": prompt.text})

    return router


def _completion_job(body: CompletionRequest) -> ChatJob:
    # A prompt over the window is refused (exceed_context_size_error): this server does not shift the context.
    return ChatJob([], body.sampling(), model=body.model, prompts=[body.prompt_value()])


def _settings(params: SamplingParams, body: CompletionRequest, n_ctx: int) -> dict[str, Any]:
    """llama.cpp's ``generation_settings``: the parameters the answer was sampled with, as decided."""
    return {"n_ctx": n_ctx, "n_predict": params.max_new_tokens, "temperature": params.temperature,
            "top_k": params.top_k, "top_p": params.top_p, "min_p": params.min_p, "seed": params.seed,
            "repeat_penalty": params.repetition_penalty, "presence_penalty": params.presence_penalty,
            "frequency_penalty": params.frequency_penalty, "stop": list(params.stop), "ignore_eos": params.ignore_eos,
            "n_probs": body.n_probs, "grammar": body.grammar, "samplers": body.samplers or list(SAMPLERS),
            "stream": body.stream}


def _props(model: LoadedModel, name: str) -> dict[str, Any]:
    """What llama.cpp's clients read before they ask: the window, the defaults, the slots, the chat template."""
    template = getattr(model.inputs.tokenizer, "chat_template", None)
    return {"default_generation_settings": _slot(model, 0, False), "total_slots": model.engine.max_running,
            "model_alias": name, "model_path": name, "chat_template": template if isinstance(template, str) else "",
            "modalities": {"vision": False, "audio": False}, "build_info": "qwen-stream", "is_sleeping": False}


def _slots(model: LoadedModel) -> list[dict[str, Any]]:
    """The slots; this engine does not say which slot holds which request, so the first ``running`` say busy."""
    running = model.engine.stats().running
    return [_slot(model, i, i < running) for i in range(model.engine.max_running)]


def _slot(model: LoadedModel, index: int, busy: bool) -> dict[str, Any]:
    defaults = model.inputs.default_params
    params = {"n_predict": -1, "temperature": defaults.temperature, "top_k": defaults.top_k, "top_p": defaults.top_p,
              "min_p": defaults.min_p, "repeat_penalty": defaults.repetition_penalty, "samplers": list(SAMPLERS)}
    return {"id": index, "id_task": -1, "n_ctx": model.context_length, "speculative": False, "is_processing": busy,
            "params": params}


def prompt_text(model: LoadedModel, request: EngineRequest) -> str:
    return str(model.inputs.tokenizer.decode(request.prompt_ids, skip_special_tokens=False))
