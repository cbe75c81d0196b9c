"""What the input processor hands the engine client: one record per engine request, plain data.

A request in the user's terms (a chat, a raw prompt, a fill-in-the-middle) becomes one ``EngineRequest`` per choice
(``n`` per prompt): the prompt's token ids, the sampling parameters with every default, seed and answer length
already decided, what the reader must parse out of the text (``ParsePlan``), and how usage counts it. Nothing below
this record decides any of those again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qwen_stream.types import SamplingParams


@dataclass(slots=True, frozen=True)
class PromptInfo:
    num_tokens: int
    dropped_turns: int = 0  # oldest history turns folded out to fit the context window
    truncated: bool = False  # a FIM prompt's context was cut to fit (llama.cpp's ``truncated``)


@dataclass(slots=True, frozen=True)
class ParsePlan:
    """What the reader splits out of the answer's text: reasoning (the template knows ``<think>``), and tool calls
    in the template's format when the request offered tools."""

    reasoning: bool = False
    starts_in_reasoning: bool = False  # the prompt itself opened a <think> block
    tool_format: str | None = None  # "hermes" or "qwen3_coder"; None: no tools offered
    tools: tuple[dict[str, Any], ...] = ()
    max_calls: int | None = None  # 1 when parallel tool calls are off

    @property
    def active(self) -> bool:
        return self.reasoning or self.tool_format is not None


@dataclass(slots=True, frozen=True)
class EngineRequest:
    prompt_ids: list[int]
    params: SamplingParams
    info: PromptInfo
    parse: ParsePlan = field(default_factory=ParsePlan)
    prompt_index: int = 0  # which of the request's prompts this answers (several raw prompts, each with n choices)
    counts_prompt: bool = True  # usage counts a prompt once, however many choices it has (as OpenAI does)
