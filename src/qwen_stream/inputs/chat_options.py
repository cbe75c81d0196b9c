"""A chat request's options besides sampling: the tools it offers and how they may be used, thinking, template
variables, how the prompt ends; and from them, what the model is shown, which grammar forces a call, and what the
reader parses.

The Python API takes these as keyword arguments among the sampling fields; every protocol's job carries them as a
dict. ``ChatOptions.take`` is where both become one value.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import dataclass
from typing import Any

from qwen_stream.errors import InvalidParameterError, UnsupportedTaskError
from qwen_stream.inputs.chat_template import PromptEnding
from qwen_stream.inputs.request import ParsePlan
from qwen_stream.inputs.tools import ToolRequest
from qwen_stream.output.message import parser_for_template, template_thinks
from qwen_stream.output.reasoning import prompt_opens_reasoning

CHAT_OPTIONS = ("tools", "tool_choice", "parallel_tool_calls", "thinking", "chat_template_kwargs",
                "continue_final_message", "add_generation_prompt")
TOOL_FORMATS = ("hermes", "qwen3_coder")


@dataclass(slots=True, frozen=True)
class ChatOptions:
    tools: ToolRequest
    template_kwargs: dict[str, Any]  # chat_template_kwargs, with ``thinking`` as Qwen3's enable_thinking
    continue_final: bool | None = None  # vLLM's continue_final_message (None: the default, see ``ending``)
    generation_prompt: bool | None = None  # vLLM's add_generation_prompt (None: the default)

    @classmethod
    def take(cls, overrides: MutableMapping[str, Any]) -> ChatOptions:
        """The chat options popped out of ``overrides`` (the sampling fields stay); ValueError for bad ones."""
        raw = {k: overrides.pop(k) for k in CHAT_OPTIONS if k in overrides}
        tools = ToolRequest.create(raw.get("tools"), raw.get("tool_choice"), raw.get("parallel_tool_calls"))
        kwargs = dict(raw.get("chat_template_kwargs") or {})
        if raw.get("thinking") is not None:
            kwargs["enable_thinking"] = bool(raw["thinking"])
        return cls(tools, kwargs, raw.get("continue_final_message"), raw.get("add_generation_prompt"))

    def ending(self, last_role: str) -> PromptEnding:
        """How the prompt ends. A final assistant message is continued (prefill: Anthropic's rule, and
        llama-server's), unless ``continue_final_message: false`` or ``add_generation_prompt: true`` asks for a new
        turn after it; ``add_generation_prompt: false`` ends the prompt with the messages (vLLM's fields)."""
        if self.continue_final and self.generation_prompt:
            raise InvalidParameterError("continue_final_message", "continue_final_message and add_generation_prompt "
                                        "cannot both be true")
        if self.continue_final and last_role != "assistant":
            raise InvalidParameterError("continue_final_message", "continue_final_message needs the last message "
                                        "to be the assistant's")
        if last_role == "assistant" and self.continue_final is not False and self.generation_prompt is None:
            return "continue"
        return "bare" if self.generation_prompt is False else "answer"

    @property
    def shown_tools(self) -> tuple[dict[str, Any], ...] | None:
        """The tool specs the template shows the model (None: none, or ``tool_choice`` "none")."""
        return self.tools.tools if self.tools.active else None

    def thinks(self, template_text: str) -> bool:
        """Whether the answer may open with reasoning: the template knows <think> and thinking is not off."""
        return template_thinks(template_text) and self.template_kwargs.get("enable_thinking") is not False


def tool_format(template_text: str, forced: str | None) -> str:
    """How the model writes tool calls: ``forced`` (serve --tool-parser), else read from its chat template."""
    name = forced or parser_for_template(template_text)
    if name is None:
        raise UnsupportedTaskError("cannot tell from this model's chat template how it writes tool calls: choose a "
                                   "tool parser (--tool-parser hermes or qwen3_coder)", code="tool_format_unknown",
                                   param="tools")
    return name


def parse_plan(template_text: str, prompt_text: str, tools: ToolRequest, forced_format: str | None) -> ParsePlan:
    """Reasoning split when the template knows <think>; tool calls read when the request offers tools."""
    reasoning = template_thinks(template_text)
    opened = reasoning and prompt_opens_reasoning(prompt_text)
    if not tools.active:
        return ParsePlan(reasoning, opened)
    return ParsePlan(reasoning, opened, tool_format(template_text, forced_format), tools.tools,
                     None if tools.parallel else 1)
