"""``/v1/messages`` and ``/v1/messages/count_tokens``: Anthropic's Messages API over the one engine (the answer's
stream events and whole message: renderer.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from qwen_stream.server.auth import api_key_dependency
from qwen_stream.server.pipeline.admission import prepare_off_loop
from qwen_stream.server.pipeline.answer import answer
from qwen_stream.server.pipeline.bodies import openapi_body, parse_body_and
from qwen_stream.server.pipeline.job import ChatJob, start_job
from qwen_stream.server.protocols.anthropic.protocol import (
    AnthropicError,
    CountTokensRequest,
    MessagesRequest,
    anthropic_error,
)
from qwen_stream.server.protocols.anthropic.renderer import WIRE, MessageBuilder
from qwen_stream.server.wire.error_shapes import error_responses, shaped_route

if TYPE_CHECKING:
    from qwen_stream.server.state import ServerState

ROUTE = "/v1/messages"
ANTHROPIC_BODIES: list[type[BaseModel]] = [MessagesRequest, CountTokensRequest]  # documented in the OpenAPI schema (see bodies.py)


def anthropic_router(state: ServerState) -> APIRouter:
    """The routes, with Anthropic's error shape and the API key from ``x-api-key`` or ``Authorization``."""
    router = APIRouter(route_class=shaped_route(anthropic_error), responses=error_responses(AnthropicError),
                       dependencies=[Depends(api_key_dependency(state.api_keys))])

    @router.post("/v1/messages", openapi_extra=openapi_body(MessagesRequest),
                 responses={200: {"content": {"text/event-stream": {}}}})
    async def create_message(request: Request) -> Response:
        body, job = await parse_body_and(request, MessagesRequest, _message_job)
        started = await start_job(state, job, ROUTE)
        builder = MessageBuilder(started.model_name, started.prompt_tokens)
        return await answer(request, started.gen, builder, WIRE, stream=body.stream)

    @router.post("/v1/messages/count_tokens", openapi_extra=openapi_body(CountTokensRequest))
    async def count_tokens(request: Request) -> JSONResponse:
        _, job = await parse_body_and(request, CountTokensRequest, _count_job)
        model = await state.model_for(job.model)
        # Templating and tokenizing are CPU work: off the event loop, as for generating routes.
        count = await prepare_off_loop(lambda: model.inputs.count_chat_tokens(job.messages, **job.options))
        return JSONResponse({"input_tokens": count})

    return router


def _message_job(body: MessagesRequest) -> ChatJob:
    return ChatJob(body.chat_messages(), body.sampling(), body.chat_options(), model=body.model)


def _count_job(body: CountTokensRequest) -> ChatJob:
    return ChatJob(body.chat_messages(), options=body.chat_options(), model=body.model)
