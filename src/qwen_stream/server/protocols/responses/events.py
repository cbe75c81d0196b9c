"""One OpenAI Response built from an answer's blocks, and the stream events that lead to it, in the order the
Responses API documents: ``response.created``, ``response.in_progress``, then per output item
``output_item.added`` -> (``content_part.added``) -> deltas -> ``...done`` -> ``output_item.done``, and last
``response.completed`` (or ``response.incomplete`` when ``max_output_tokens`` cut it short) with usage.
Every event carries a ``sequence_number`` counting from 0.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

from qwen_stream.server.pipeline.answer import Event
from qwen_stream.server.pipeline.answer_blocks import AnswerBlocks, Block, BlockEvent
from qwen_stream.server.protocols.responses.protocol import ResponsesRequest
from qwen_stream.types import FinishReason, StreamEvent

if TYPE_CHECKING:
    from qwen_stream.client.choices import TokenUsage

_ITEM_PREFIX = {"text": "msg", "reasoning": "rs", "tool_call": "fc"}


def new_response_id() -> str:
    return f"resp_{uuid.uuid4().hex}"


class ResponseBuilder:
    """Feed it the events of one answer; it returns the stream events and keeps the Response object."""

    def __init__(self, body: ResponsesRequest, model: str) -> None:
        self.id = new_response_id()
        self.body = body
        self.model = model
        self.created_at = int(time.time())
        self.status = "in_progress"
        self.usage: TokenUsage | None = None
        self.items: list[dict[str, Any]] = []  # output items, in order
        self._blocks = AnswerBlocks()
        self._item_of: dict[int, dict[str, Any]] = {}  # block index -> its output item
        self._seq = 0
        self._incomplete_reason: str | None = None

    def start(self) -> list[Event]:
        return [self._event("response.created", response=self.response()),
                self._event("response.in_progress", response=self.response())]

    def feed(self, event: StreamEvent, index: int = 0) -> list[Event]:
        return [e for block_event in self._blocks.feed(event) for e in self._on_block(block_event)]

    def finish(self, final: StreamEvent | None, usage: TokenUsage) -> list[Event]:
        """The answer ended (``final`` is its last event; None if it never finished): close it, last event."""
        reason = final.finish_reason if final is not None else FinishReason.ABORT
        finished = reason in (FinishReason.STOP, FinishReason.TOOL_CALLS)
        done_status = "completed" if finished else "incomplete"
        events = [e for block_event in self._blocks.close() for e in self._on_block(block_event, done_status)]
        self.usage = usage
        if finished:
            self.status = "completed"
        else:
            self.status = "incomplete"
            self._incomplete_reason = "max_output_tokens" if reason is FinishReason.LENGTH else None
        name = "response.completed" if self.status == "completed" else "response.incomplete"
        return [*events, self._event(name, response=self.response())]

    def failed(self, message: str) -> list[Event]:
        """An engine error after the stream started: an ``error`` event, then ``response.failed``."""
        self.status = "failed"
        error = {"code": "server_error", "message": message}
        return [self._event("error", code="server_error", message=message, param=None),
                self._event("response.failed", response={**self.response(), "error": error})]

    def whole(self) -> dict[str, Any]:
        return self.response()

    def response(self) -> dict[str, Any]:
        """The Response object as it stands."""
        body = self.body
        return {
            "id": self.id, "object": "response", "created_at": self.created_at, "status": self.status,
            "completed_at": int(time.time()) if self.status == "completed" else None,
            "error": None,
            "incomplete_details": {"reason": self._incomplete_reason} if self.status == "incomplete" else None,
            "instructions": body.instructions, "max_output_tokens": body.max_output_tokens, "model": self.model,
            "output": [dict(item) for item in self.items], "parallel_tool_calls": body.parallel_tool_calls,
            "previous_response_id": body.previous_response_id,
            "reasoning": body.reasoning.model_dump() if body.reasoning else {"effort": None, "summary": None},
            "store": body.store, "temperature": body.temperature,
            "text": {"format": body.text.format.model_dump(by_alias=True, exclude_none=True)},
            "tool_choice": body.tool_choice, "tools": body.tools, "top_p": body.top_p,
            "truncation": body.truncation, "metadata": body.metadata or {}, "user": body.user,
            "usage": _usage(self.usage) if self.usage is not None else None,
        }

    # ---- blocks to output items -------------------------------------------------------------------------

    def _on_block(self, event: BlockEvent, done_status: str = "completed") -> list[Event]:
        block = event.block
        if event.kind == "start":
            return self._added(block)
        item = self._item_of[block.index]
        where = {"item_id": item["id"], "output_index": self.items.index(item)}
        if event.kind == "delta":
            if block.kind == "tool_call":
                return [self._event("response.function_call_arguments.delta", **where, delta=event.delta)]
            if block.kind == "reasoning":
                return [self._event("response.reasoning_text.delta", **where, content_index=0, delta=event.delta)]
            return [self._event("response.output_text.delta", **where, content_index=0, delta=event.delta,
                                logprobs=[])]
        return self._done(block, item, where, done_status)

    def _added(self, block: Block) -> list[Event]:
        item_id = f"{_ITEM_PREFIX[block.kind]}_{uuid.uuid4().hex}"
        item: dict[str, Any]
        if block.kind == "tool_call":
            item = {"id": item_id, "type": "function_call", "status": "in_progress", "call_id": block.call_id,
                    "name": block.name, "arguments": ""}
        elif block.kind == "reasoning":
            item = {"id": item_id, "type": "reasoning", "status": "in_progress", "summary": [], "content": []}
        else:
            item = {"id": item_id, "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        self.items.append(item)
        self._item_of[block.index] = item
        where = {"output_index": len(self.items) - 1}
        events = [self._event("response.output_item.added", **where, item=dict(item))]
        if block.kind != "tool_call":
            events.append(self._event("response.content_part.added", **where, item_id=item_id, content_index=0,
                                      part=_part(block.kind, "")))
        return events

    def _done(self, block: Block, item: dict[str, Any], where: dict[str, Any], status: str) -> list[Event]:
        item["status"] = status
        if block.kind == "tool_call":
            item["arguments"] = block.text
            return [self._event("response.function_call_arguments.done", **where, name=block.name,
                                arguments=block.text),
                    self._event("response.output_item.done", output_index=where["output_index"], item=dict(item))]
        part = _part(block.kind, block.text)
        item["content"] = [part]
        done_name = "response.reasoning_text.done" if block.kind == "reasoning" else "response.output_text.done"
        extra: dict[str, Any] = {} if block.kind == "reasoning" else {"logprobs": []}
        return [self._event(done_name, **where, content_index=0, text=block.text, **extra),
                self._event("response.content_part.done", **where, content_index=0, part=part),
                self._event("response.output_item.done", output_index=where["output_index"], item=dict(item))]

    def _event(self, kind: str, /, **fields: Any) -> Event:
        event = {"type": kind, "sequence_number": self._seq, **fields}
        self._seq += 1
        return event


def _part(kind: str, text: str) -> dict[str, Any]:
    if kind == "reasoning":
        return {"type": "reasoning_text", "text": text}
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _usage(usage: TokenUsage) -> dict[str, Any]:
    return {"input_tokens": usage.prompt_tokens,
            "input_tokens_details": {"cached_tokens": usage.cached_tokens,
                                     "cache_write_tokens": 0},
            "output_tokens": usage.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.total_tokens}
