"""The web chat's "Thinking" block: reasoning streams into a collapsible message above the answer and is never
sent back to the model. No Qwen3 weights here, so a scripted stream plays the model (the parsing is tested in
tests/output); the handler, chat bookkeeping and gradio are real."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

pytest.importorskip("gradio", reason="gradio is not installed (pip install 'qwen-stream[web]')")

from qwen_stream.types import FinishReason, SamplingParams, StreamEvent
from qwen_stream.web.app import WebChat
from qwen_stream.web.chat_logic import THINKING_TITLE, to_pairs


class ScriptedStream:
    def __init__(self, events: list[StreamEvent]) -> None:
        self.events = events
        self.prompt_info = type("Info", (), {"dropped_turns": 0})()

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        async def run() -> AsyncIterator[StreamEvent]:
            for event in self.events:
                yield event

        return run()

    async def aclose(self) -> None:
        pass


class ThinkingModel:
    """Stands in for a Qwen3 ChatModel: records what it was asked, answers with reasoning then content."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def sampling_params(self, **overrides: Any) -> SamplingParams:
        return SamplingParams().with_(**{k: v for k, v in overrides.items() if v is not None})

    def astream(self, query: str, **kwargs: Any) -> ScriptedStream:
        self.calls.append({"query": query, **kwargs})
        return ScriptedStream([
            StreamEvent(delta="", text="", token_ids=[1], reasoning_delta="Two and two", reasoning="Two and two"),
            StreamEvent(delta="4", text="4", token_ids=[2], reasoning="Two and two", finish_reason=FinishReason.STOP),
        ])


def test_reasoning_streams_into_a_collapsible_block_and_is_not_sent_back() -> None:
    model = ThinkingModel()
    chat = WebChat(model)  # type: ignore[arg-type]

    async def answer(question: str, messages: list[dict[str, Any]], thinking: bool) -> list[list[dict[str, Any]]]:
        return [[dict(m) for m in c] async for c in chat.respond(question, messages, "", 0.0, 1.0, 8, -1, thinking)]

    frames = asyncio.run(answer("2+2?", [], True))
    final = frames[-1]
    assert [m["role"] for m in final] == ["user", "assistant", "assistant"]
    assert final[1]["metadata"]["title"] == THINKING_TITLE and final[1]["content"] == "Two and two"
    assert final[1]["metadata"]["status"] == "done" and final[2]["content"] == "4"
    assert any(f[1].get("metadata", {}).get("status") == "pending" for f in frames if len(f) == 3)
    assert model.calls[0]["thinking"] is True
    assert to_pairs(final) == [("2+2?", "4")]  # the reasoning stays on the page only
    asyncio.run(answer("And 3+3?", final, False))
    assert model.calls[1]["history"] == [("2+2?", "4")] and model.calls[1]["thinking"] is False
