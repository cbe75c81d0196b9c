"""OpenAI Responses (``POST /v1/responses``): the request body, and its ``input`` items turned into chat messages.

Input items: messages (``input_text`` / ``output_text`` parts or a plain string), ``function_call`` and
``function_call_output`` (a tool round trip), ``reasoning`` (dropped: earlier turns' thinking is not sent back to
the model, as Qwen3's template does). Images, files and audio get a 400 naming the part: the model reads text only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from pydantic import Field

from qwen_stream.inputs.output_format import OutputFormat
from qwen_stream.server.pipeline.bodies import Refused, StrictBody, parse_part, unsupported
from qwen_stream.server.pipeline.sampling_fields import SamplingFields
from qwen_stream.server.wire.errors import APIError

Message = dict[str, Any]


class TextFormat(StrictBody):
    HARMLESS: ClassVar[Mapping[str, str]] = {"description": "what the format is for: the schema itself binds"}

    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None

    def output(self) -> OutputFormat | None:
        """What the answer must match (grammar-constrained decoding); None for plain text."""
        if self.type == "json_schema":
            if self.schema_ is None:
                raise unsupported("text.format.schema", "a json_schema format needs a schema")
            return OutputFormat.json_schema(self.schema_, "text.format.schema")
        return OutputFormat.json_object("text.format") if self.type == "json_object" else None


class TextConfig(StrictBody):
    REFUSED: ClassVar[Mapping[str, Refused]] = {
        "verbosity": Refused("answer verbosity is not supported (medium is what the model does)", ("medium",))}

    format: TextFormat = Field(default_factory=TextFormat)


class ReasoningConfig(StrictBody):
    HARMLESS: ClassVar[Mapping[str, str]] = {"generate_summary": "the old name of summary: reasoning is given whole"}

    effort: str | None = None
    summary: str | None = None

    def thinking(self) -> bool | None:
        """The model's thinking switch: off for effort "none"/"minimal", on for any other effort."""
        if self.effort is None:
            return None
        return self.effort not in ("none", "minimal")


class ResponsesRequest(StrictBody):
    HARMLESS: ClassVar[Mapping[str, str]] = {
        "include": "extra output data (encrypted reasoning, logprobs, search results): not produced; the answer is "
                   "the same",
        "service_tier": "OpenAI's billing tier: one tier here",
        "safety_identifier": "an end-user id for OpenAI's abuse detection",
        "prompt_cache_key": "a cache-routing hint: prefix reuse here is automatic",
        "prompt_cache_retention": "how long OpenAI keeps a prompt cache: prefix reuse here is automatic",
        "max_tool_calls": "a limit on built-in tool calls: no tool runs on this server",
        "stream_options": "stream obfuscation: no padding is added here"}
    REFUSED: ClassVar[Mapping[str, Refused]] = {
        "top_logprobs": Refused("log-probabilities are not supported on /v1/responses: use /v1/chat/completions",
                                (0,))}

    model: str | None = None
    input: str | list[dict[str, Any]]
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    stream: bool = False
    store: bool = True
    previous_response_id: str | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: str | dict[str, Any] = "auto"
    parallel_tool_calls: bool = True
    text: TextConfig = Field(default_factory=TextConfig)
    reasoning: ReasoningConfig | None = None
    metadata: dict[str, str] | None = None
    truncation: Literal["auto", "disabled"] = "disabled"
    background: bool = False
    conversation: str | dict[str, Any] | None = None
    prompt: dict[str, Any] | None = None
    user: str | None = None
    # Extensions, as vLLM accepts them (the OpenAI client sends them with extra_body=...).
    seed: int | None = None
    top_k: int | None = None
    stop: str | list[str] | None = None

    def sampling(self) -> SamplingFields:
        return SamplingFields(max_tokens=self.max_output_tokens, temperature=self.temperature, top_p=self.top_p,
                              top_k=self.top_k, seed=self.seed, stop=self.stop, output=self.text.format.output())

    def chat_options(self) -> dict[str, Any]:
        """Tools, tool_choice and the thinking switch in ChatModel's terms (OpenAI chat's function specs)."""
        return {"tools": [_function_spec(tool, i) for i, tool in enumerate(self.tools)] or None,
                "tool_choice": _tool_choice(self.tool_choice), "parallel_tool_calls": self.parallel_tool_calls,
                "thinking": self.reasoning.thinking() if self.reasoning is not None else None}

    def check_supported(self) -> None:
        """400 for what would change the answer's meaning and is not honoured here."""
        if self.background:
            raise unsupported("background", "background responses are not supported; stream instead")
        if self.conversation is not None:
            raise unsupported("conversation", "conversations are not supported; chain with previous_response_id")
        if self.prompt is not None:
            raise unsupported("prompt", "stored prompt templates are not supported")


_ITEM_HARMLESS: Mapping[str, str] = {"id": "an item's id, echoed back from an earlier response",
                                     "status": "an item's status, echoed back from an earlier response"}


class _MessageItem(StrictBody):
    HARMLESS: ClassVar[Mapping[str, str]] = _ITEM_HARMLESS

    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[dict[str, Any]]


class _FunctionCallItem(StrictBody):
    HARMLESS: ClassVar[Mapping[str, str]] = _ITEM_HARMLESS

    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str


class _FunctionCallOutputItem(StrictBody):
    HARMLESS: ClassVar[Mapping[str, str]] = _ITEM_HARMLESS

    type: Literal["function_call_output"]
    call_id: str
    output: str | list[dict[str, Any]]


_TEXT_PARTS = frozenset({"input_text", "output_text", "text", "refusal"})
_MEDIA_PARTS = {"input_image": "image", "input_file": "file", "input_audio": "audio"}


def input_messages(body: ResponsesRequest) -> list[Message]:
    """The request's ``input`` as chat messages (without ``instructions``, which are not carried to a follow-up)."""
    if isinstance(body.input, str):
        return [{"role": "user", "content": body.input}]
    messages: list[Message] = []
    for i, item in enumerate(body.input):
        where = f"input[{i}]"
        kind = item.get("type", "message")
        if kind == "message":
            message = parse_part(_MessageItem, item, where)
            role = "system" if message.role == "developer" else message.role
            messages.append({"role": role, "content": _text_of(message.content, f"{where}.content")})
        elif kind == "function_call":
            call = parse_part(_FunctionCallItem, item, where)
            messages.append({"role": "assistant", "content": "", "tool_calls": [
                {"id": call.call_id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}]})
        elif kind == "function_call_output":
            result = parse_part(_FunctionCallOutputItem, item, where)
            messages.append({"role": "tool", "tool_call_id": result.call_id,
                             "content": _text_of(result.output, f"{where}.output")})
        elif kind != "reasoning":
            raise APIError(400, f"{where}: input items of type {kind!r} are not supported", "invalid_request_error",
                           param=where)
    return _merge_tool_calls(messages)


def _text_of(content: str | list[dict[str, Any]], where: str) -> str:
    if isinstance(content, str):
        return content
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, dict) else None
        text = part.get("text", part.get("refusal")) if isinstance(part, dict) else None
        if kind in _TEXT_PARTS and isinstance(text, str):
            texts.append(text)
        elif kind in _MEDIA_PARTS:
            raise unsupported(f"{where}[{j}]", f"{_MEDIA_PARTS[kind]} input is not supported: the model reads text")
        else:
            raise APIError(400, f"{where}[{j}]: expected a text part, got {part!r:.80}", "invalid_request_error",
                           param=f"{where}[{j}]")
    return "".join(texts)


def _merge_tool_calls(messages: list[Message]) -> list[Message]:
    """An assistant message and the function_call items after it are one assistant turn, as chat messages put
    them (the Responses API lists each call as an item of its own)."""
    merged: list[Message] = []
    for message in messages:
        previous = merged[-1] if merged else None
        if previous is not None and previous["role"] == "assistant" and "tool_calls" in message:
            previous["tool_calls"] = previous.get("tool_calls", []) + message["tool_calls"]
        else:
            merged.append(message)
    return merged


def _function_spec(tool: dict[str, Any], index: int) -> dict[str, Any]:
    """A Responses function tool (flat: ``{"type": "function", "name", "parameters"}``) as a chat function spec."""
    if tool.get("type") != "function":
        raise unsupported(f"tools[{index}]", f"only function tools are supported, got {tool.get('type')!r}")
    function = {k: tool[k] for k in ("name", "description", "parameters", "strict") if k in tool}
    return {"type": "function", "function": function}


def _tool_choice(choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, dict) and choice.get("type") == "function" and "name" in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    if isinstance(choice, dict):
        raise unsupported("tool_choice", f"expected auto, none, required or a function, got {choice!r:.60}")
    return choice
