"""The terminal shows a thinking model's reasoning dimmed before the answer, or hides it (--hide-thinking).

Scripted events stand in for a Qwen3 stream (no Qwen3 weights here); the parsing itself is tested in tests/output."""

from __future__ import annotations

import io
from typing import Any

from rich.console import Console

from qwen_stream.cli.chat import ChatLoop, _Progress
from qwen_stream.cli.render import StreamStyler
from qwen_stream.cli.session import ChatState
from qwen_stream.types import FinishReason, SamplingParams, StreamEvent


def events() -> list[StreamEvent]:
    return [StreamEvent(delta="", text="", token_ids=[1], reasoning_delta="Let me think", reasoning="Let me think"),
            StreamEvent(delta="", text="", token_ids=[2], reasoning_delta=" hard.", reasoning="Let me think hard."),
            StreamEvent(delta="Four.", text="Four.", token_ids=[3], reasoning="Let me think hard.",
                        finish_reason=FinishReason.STOP)]


def show(hide: bool) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, color_system="standard", width=200)
    state = ChatState(params=SamplingParams(), hide_thinking=hide)
    loop: Any = ChatLoop(console, model=None, state=state, reader=None)  # type: ignore[arg-type]
    progress = _Progress()
    loop._print_answer(iter(events()), StreamStyler(markdown=False), progress)
    assert progress.last is not None and progress.last.text == "Four."
    return out.getvalue()


def test_reasoning_is_dimmed_then_the_answer_on_its_own_line() -> None:
    shown = show(hide=False)
    assert "\x1b[2mLet me think\x1b[0m" in shown  # ANSI dim
    assert shown.index("hard.") < shown.index("\nFour.")


def test_hide_thinking_prints_only_the_answer() -> None:
    shown = show(hide=True)
    assert "think" not in shown and "Four." in shown
