"""``/v1/responses``: OpenAI's Responses API over the one engine (create, streamed or not; retrieve; delete)."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from qwen_stream.server.admission import respond_json
from qwen_stream.server.answer_stream import Event, frames, render, run_to_end
from qwen_stream.server.chat_job import ChatJob, start_job
from qwen_stream.server.response_store import ResponseStore, StoredResponse
from qwen_stream.server.responses_events import ResponseBuilder
from qwen_stream.server.responses_protocol import ResponsesRequest, input_messages
from qwen_stream.server.sse import SSEResponse, sse_event

if TYPE_CHECKING:
    from qwen_stream.server.state import ServerState

ROUTE = "/v1/responses"


def responses_router(state: ServerState, store: ResponseStore) -> APIRouter:
    """The routes, to be included under ``/v1`` (with the OpenAI error shape and the API key check)."""
    router = APIRouter()

    @router.post("/responses", responses={200: {"content": {"text/event-stream": {}}}})
    async def create_response(body: ResponsesRequest, request: Request) -> Response:
        body.check_supported()
        conversation = _conversation(body, store)
        system = [{"role": "system", "content": body.instructions}] if body.instructions is not None else []
        job = ChatJob(system + conversation, body.sampling(), body.chat_options(), model=body.model)
        started = await start_job(state, job, ROUTE)
        builder = ResponseBuilder(body, started.model_name)
        events = _stored(render(started.gen, builder), builder, store, conversation)
        if body.stream:
            return SSEResponse(frames(events, _encode, builder.failed))
        return await respond_json(request, _whole(events, builder))

    @router.get("/responses/{response_id}")
    async def retrieve_response(response_id: str) -> JSONResponse:
        return JSONResponse(store.get(response_id).body)

    @router.delete("/responses/{response_id}")
    async def delete_response(response_id: str) -> JSONResponse:
        store.delete(response_id)
        return JSONResponse({"id": response_id, "object": "response", "deleted": True})

    return router


def _conversation(body: ResponsesRequest, store: ResponseStore) -> list[dict[str, Any]]:
    """The earlier turns (from ``previous_response_id``), then this request's input."""
    earlier = [] if body.previous_response_id is None else store.get(
        body.previous_response_id, param="previous_response_id").conversation
    return earlier + input_messages(body)


async def _stored(events: AsyncGenerator[Event, None], builder: ResponseBuilder, store: ResponseStore,
                  conversation: list[dict[str, Any]]) -> AsyncGenerator[Event, None]:
    """The events, then the finished response stored (when asked to) for a later previous_response_id."""
    async for event in events:
        yield event
    if builder.body.store:
        store.put(builder.id, StoredResponse(conversation + _output_messages(builder), builder.response()))


async def _whole(events: AsyncGenerator[Event, None], builder: ResponseBuilder) -> dict[str, Any]:
    await run_to_end(events)
    return builder.response()


def _encode(event: Event) -> bytes:
    return sse_event(event["type"], event)


def _output_messages(builder: ResponseBuilder) -> list[dict[str, Any]]:
    """The answer as chat messages for the next turn: its text and tool calls (reasoning is not sent back)."""
    text = "".join(part["text"] for item in builder.items if item["type"] == "message" for part in item["content"])
    calls = [{"id": item["call_id"], "type": "function",
              "function": {"name": item["name"], "arguments": item["arguments"]}}
             for item in builder.items if item["type"] == "function_call"]
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = calls
    return [message]
