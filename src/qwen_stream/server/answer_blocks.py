"""One answer's stream cut into content blocks, the unit every wire format is built from.

An answer is a sequence of blocks: reasoning, text, tool calls. OpenAI Responses makes each block an output item,
Anthropic a content block, Ollama a field of its message. ``AnswerBlocks.feed`` turns each ``StreamEvent`` into
block events (start, delta, stop) so that each protocol renders them and never looks at the event itself; the
same blocks build a whole answer, which is why a streamed answer always equals the whole one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from qwen_stream.types import StreamEvent

BlockKind = Literal["text", "reasoning", "tool_call"]


@dataclass(slots=True)
class Block:
    index: int  # position in the answer
    kind: BlockKind
    text: str = ""  # the text, the reasoning, or a tool call's arguments (JSON) so far
    name: str = ""  # tool_call: the function's name
    call_id: str = ""  # tool_call: the id the client answers the call with


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

    def feed(self, event: StreamEvent) -> list[BlockEvent]:
        out: list[BlockEvent] = []
        if event.delta:
            out += self._append("text", event.delta)
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

    def _start(self, block: Block) -> list[BlockEvent]:
        self.blocks.append(block)
        self._open = block
        return [BlockEvent("start", block)]
