"""One answer's stream cut into content blocks, the unit every wire format is built from.

An answer is a sequence of blocks: reasoning, text, tool calls. OpenAI Responses makes each block an output item,
Anthropic a content block, Ollama a field of its message. ``AnswerBlocks.feed`` turns each ``StreamEvent`` into
block events (start, delta, stop) so that each protocol renders them and never looks at the event itself; the
same blocks build a whole answer, which is why a streamed answer always equals the whole one.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Literal

from qwen_stream.types import StreamEvent, ToolCallDelta

BlockKind = Literal["text", "reasoning", "tool_call"]


@dataclass(slots=True)
class Block:
    index: int  # position in the answer
    kind: BlockKind
    text: str = ""  # the text, the reasoning, or a tool call's arguments (JSON) so far
    name: str = ""  # tool_call: the function's name
    call_id: str = ""  # tool_call: the id the client answers the call with

    def arguments(self) -> dict[str, Any]:
        """A tool call's arguments as an object; {} when the model did not finish writing one (cut by the token
        limit: the answer's finish reason then says so)."""
        try:
            value = json.loads(self.text) if self.text else {}
        except ValueError:
            return {}
        return value if isinstance(value, dict) else {}


@dataclass(slots=True, frozen=True)
class BlockEvent:
    kind: Literal["start", "delta", "stop"]
    block: Block
    delta: str = ""


class AnswerBlocks:
    """Feed every event of one answer, then ``close()``; ``blocks`` holds the answer so far."""

    def __init__(self) -> None:
        self.blocks: list[Block] = []
        self._open: Block | None = None
        self._calls: dict[int, Block] = {}  # tool call index -> its block

    def feed(self, event: StreamEvent) -> list[BlockEvent]:
        # Within one event (several tokens merged for a reader that lagged) the model wrote its thinking first,
        # then text, then calls.
        out: list[BlockEvent] = []
        if event.reasoning_delta:
            out += self._append("reasoning", event.reasoning_delta)
        if event.delta:
            out += self._append("text", event.delta)
        for call in event.tool_call_deltas:
            out += self._tool_call(call)
        return out

    def close(self) -> list[BlockEvent]:
        """The answer ended: stop the open block."""
        if self._open is None:
            return []
        block, self._open = self._open, None
        return [BlockEvent("stop", block)]

    def _append(self, kind: BlockKind, text: str) -> list[BlockEvent]:
        out: list[BlockEvent] = []
        if self._open is None or self._open.kind != kind:
            out += self.close()
            out += self._start(Block(len(self.blocks), kind))
        block = self._open
        if block is None:  # _start always opens one; for the type checker
            return out
        block.text += text
        out.append(BlockEvent("delta", block, text))
        return out

    def _tool_call(self, delta: ToolCallDelta) -> list[BlockEvent]:
        out: list[BlockEvent] = []
        block = self._calls.get(delta.index)
        if block is None:  # the first piece of a call names it
            out += self.close()
            block = Block(len(self.blocks), "tool_call", name=delta.name or "", call_id=delta.id or "")
            self._calls[delta.index] = block
            out += self._start(block)
        if delta.arguments:
            block.text += delta.arguments
            out.append(BlockEvent("delta", block, delta.arguments))
        return out

    def _start(self, block: Block) -> list[BlockEvent]:
        self.blocks.append(block)
        self._open = block
        return [BlockEvent("start", block)]
