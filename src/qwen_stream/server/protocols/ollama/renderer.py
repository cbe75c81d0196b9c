"""Ollama's answer to chat and generate, from one answer's events: NDJSON lines when streamed, one object when whole.

A stream is one JSON object per line; the last has ``done: true``, ``done_reason`` and the counts and timings
Ollama's clients read (nanoseconds): ``total_duration``, ``load_duration`` (0: the model was loaded at start),
``prompt_eval_count`` (the whole prompt, cached prefix included), ``prompt_eval_duration`` (to the first token),
``eval_count``, ``eval_duration``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Literal

from qwen_stream.server.pipeline.answer import Event, Wire
from qwen_stream.server.pipeline.answer_blocks import AnswerBlocks, Block, BlockEvent
from qwen_stream.server.wire.sse import SSEResponse
from qwen_stream.types import FinishReason, StreamEvent

if TYPE_CHECKING:
    from qwen_stream.client.choices import TokenUsage

_NS = 1_000_000_000
Kind = Literal["chat", "generate"]


class NDJSONResponse(SSEResponse):
    """Newline-delimited JSON, streamed; closes its generator however the stream ends, as SSEResponse does."""

    media_type = "application/x-ndjson"


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
        return {"model": self.model, "created_at": now_iso(), **body, "done": False}


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


WIRE: Wire[Event] = Wire(_encode, _failed, response=NDJSONResponse)


def now_iso() -> str:
    return iso_at(time.time())


def iso_at(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")
