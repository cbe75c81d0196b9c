"""``/v1/responses``: OpenAI's Responses API over the one engine (create, streamed or not; retrieve; delete)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from qwen_stream.server.pipeline.answer import Event, Wire, answer
from qwen_stream.server.pipeline.bodies import openapi_body, parse_body
from qwen_stream.server.pipeline.job import ChatJob, start_job
from qwen_stream.server.protocols.responses.events import ResponseBuilder
from qwen_stream.server.protocols.responses.protocol import ResponsesRequest, input_messages
from qwen_stream.server.protocols.responses.store import ResponseStore, StoredResponse
from qwen_stream.server.wire.sse import sse_event
from qwen_stream.types import StreamEvent

if TYPE_CHECKING:
    from qwen_stream.client.choices import TokenUsage
    from qwen_stream.server.state import ServerState

ROUTE = "/v1/responses"
RESPONSES_BODIES: list[type[BaseModel]] = [ResponsesRequest]  # documented in the OpenAPI schema (see bodies.py)


def responses_router(state: ServerState, store: ResponseStore) -> APIRouter:
    """The routes, to be included under ``/v1`` (with the OpenAI error shape and the API key check)."""
    router = APIRouter()

    @router.post("/responses", openapi_extra=openapi_body(ResponsesRequest),
                 responses={200: {"content": {"text/event-stream": {}}}})
    async def create_response(request: Request) -> Response:
        body = await parse_body(request, ResponsesRequest)
        body.check_supported()
        conversation = _conversation(body, store)
        system = [{"role": "system", "content": body.instructions}] if body.instructions is not None else []
        job = ChatJob(system + conversation, body.sampling(), body.chat_options(), model=body.model,
                      fold_history=body.truncation == "auto")  # "disabled" (the default): too long is a 400
        started = await start_job(state, job, ROUTE)
        builder = ResponseBuilder(body, started.model_name)
        renderer = _Storing(builder, store, conversation)
        return await answer(request, started.gen, renderer, Wire(_encode, builder.failed), stream=body.stream)

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


class _Storing:
    """The builder's events; once the answer is finished, the response stored (when asked to) for a later
    previous_response_id."""

    def __init__(self, builder: ResponseBuilder, store: ResponseStore, conversation: list[dict[str, Any]]) -> None:
        self.builder = builder
        self._store = store
        self._conversation = conversation

    def start(self) -> list[Event]:
        return self.builder.start()

    def feed(self, event: StreamEvent, index: int = 0) -> list[Event]:
        return self.builder.feed(event)

    def finish(self, final: StreamEvent | None, usage: TokenUsage) -> list[Event]:
        events = self.builder.finish(final, usage)
        if self.builder.body.store:
            turns = self._conversation + _output_messages(self.builder)
            self._store.put(self.builder.id, StoredResponse(turns, self.builder.response()))
        return events

    def whole(self) -> dict[str, Any]:
        return self.builder.response()


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
