"""Anthropic's Messages answer, streamed and whole, from one answer's events: ``message_start``, ``ping``, per
content block ``content_block_start`` -> ``content_block_delta``s -> ``content_block_stop``, ``message_delta`` and
``message_stop``; the whole message is built from the same blocks."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING, Any

from qwen_stream.server.pipeline.answer import Event, Wire
from qwen_stream.server.pipeline.answer_blocks import AnswerBlocks, Block, BlockEvent
from qwen_stream.server.protocols.anthropic.protocol import (
    anthropic_error_event,
)
from qwen_stream.server.wire.sse import sse_event
from qwen_stream.types import FinishReason, StreamEvent

if TYPE_CHECKING:
    from qwen_stream.client.choices import TokenUsage

_DELTA_TYPES = {"text": ("text_delta", "text"), "reasoning": ("thinking_delta", "thinking"),
                "tool_call": ("input_json_delta", "partial_json")}


class MessageBuilder:
    """Feed it the events of one answer; it returns Anthropic's stream events and keeps the whole message."""

    def __init__(self, model: str, prompt_tokens: int) -> None:
        self.id = f"msg_{uuid.uuid4().hex}"
        self.model = model
        self.content: list[dict[str, Any]] = []
        self.stop_reason: str | None = None
        self.stop_sequence: str | None = None
        self.usage: dict[str, int] = {"input_tokens": prompt_tokens, "output_tokens": 0,
                                      "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0}
        self._blocks = AnswerBlocks()

    def start(self) -> list[Event]:
        return [{"type": "message_start", "message": self.message()}, {"type": "ping"}]

    def feed(self, event: StreamEvent, index: int = 0) -> list[Event]:
        return [e for block_event in self._blocks.feed(event) for e in self._on_block(block_event)]

    def finish(self, final: StreamEvent | None, usage: TokenUsage) -> list[Event]:
        events = [e for block_event in self._blocks.close() for e in self._on_block(block_event)]
        self.stop_reason, self.stop_sequence = _stop(final, self._blocks.blocks)
        cached = usage.cached_tokens
        # Anthropic counts cache reads apart: input + cache_read is the whole prompt.
        self.usage.update(input_tokens=usage.prompt_tokens - cached, cache_read_input_tokens=cached,
                          output_tokens=usage.completion_tokens)
        delta = {"stop_reason": self.stop_reason, "stop_sequence": self.stop_sequence}
        return [*events, {"type": "message_delta", "delta": delta, "usage": dict(self.usage)},
                {"type": "message_stop"}]

    def whole(self) -> dict[str, Any]:
        return self.message()

    def message(self) -> dict[str, Any]:
        return {"id": self.id, "type": "message", "role": "assistant", "model": self.model,
                "content": [dict(block) for block in self.content], "stop_reason": self.stop_reason,
                "stop_sequence": self.stop_sequence, "usage": dict(self.usage)}

    def _on_block(self, event: BlockEvent) -> list[Event]:
        block = event.block
        if event.kind == "start":
            self.content.append(_empty_block(block))
            return [{"type": "content_block_start", "index": block.index, "content_block": _empty_block(block)}]
        if event.kind == "delta":
            delta_type, key = _DELTA_TYPES[block.kind]
            return [{"type": "content_block_delta", "index": block.index,
                     "delta": {"type": delta_type, key: event.delta}}]
        self.content[block.index] = _whole_block(block)
        return [{"type": "content_block_stop", "index": block.index}]


def _encode(event: Event) -> bytes:
    return sse_event(event["type"], event)


def _empty_block(block: Block) -> dict[str, Any]:
    if block.kind == "tool_call":
        return {"type": "tool_use", "id": block.call_id, "name": block.name, "input": {}}
    if block.kind == "reasoning":
        return {"type": "thinking", "thinking": "", "signature": ""}
    return {"type": "text", "text": ""}


def _whole_block(block: Block) -> dict[str, Any]:
    whole = _empty_block(block)
    if block.kind == "tool_call":
        whole["input"] = block.arguments()
    else:
        whole["thinking" if block.kind == "reasoning" else "text"] = block.text
    return whole


def _stop(final: StreamEvent | None, blocks: list[Block]) -> tuple[str, str | None]:
    """Anthropic's stop_reason (and the stop sequence that was hit, if one was)."""
    if final is None or final.finish_reason is FinishReason.LENGTH:
        return "max_tokens", None
    if any(block.kind == "tool_call" for block in blocks):
        return "tool_use", None
    if final.stop_string is not None:
        return "stop_sequence", final.stop_string
    return "end_turn", None


def _failed(message: str) -> list[Event]:
    return [anthropic_error_event(message)]


WIRE: Wire[Event] = Wire(_encode, _failed)
