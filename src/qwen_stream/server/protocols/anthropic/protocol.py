"""Anthropic Messages (``POST /v1/messages``): the request body, its messages turned into chat messages, and
Anthropic's error shape ``{"type": "error", "error": {"type", "message"}}``.

Content blocks read: ``text``; ``tool_use`` and ``tool_result`` (a tool round trip); ``thinking`` and
``redacted_thinking`` (dropped: earlier turns' thinking is not sent back to the model). Images and documents get a
400 naming the block: the model reads text only.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.responses import Response

from qwen_stream.inputs.output_format import OutputFormat
from qwen_stream.server.pipeline.bodies import Refused, StrictBody, parse_part, unsupported
from qwen_stream.server.pipeline.sampling_fields import SamplingFields
from qwen_stream.server.wire.errors import APIError

Message = dict[str, Any]

# HTTP status -> Anthropic's error type (https://docs.anthropic.com/en/api/errors).
_ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error", 403: "permission_error",
                404: "not_found_error", 413: "request_too_large", 429: "rate_limit_error", 503: "overloaded_error"}


def anthropic_error(status: int, message: str, _kind: str, headers: Mapping[str, str]) -> Response:
    kind = _ERROR_TYPES.get(status, "invalid_request_error" if status < 500 else "api_error")
    return JSONResponse({"type": "error", "error": {"type": kind, "message": message}}, status_code=status,
                        headers=dict(headers))


class AnthropicErrorDetail(BaseModel):
    type: str
    message: str


class AnthropicError(BaseModel):
    """Anthropic's error body, as the OpenAPI document declares it."""

    type: Literal["error"]
    error: AnthropicErrorDetail


def anthropic_error_event(message: str) -> dict[str, Any]:
    """The ``error`` event of a stream that failed after it started."""
    return {"type": "error", "error": {"type": "api_error", "message": message}}


_BLOCK_HARMLESS: Mapping[str, str] = {"type": "the block's type, already read",
                                      "cache_control": "a prompt-caching hint: prefix reuse here is automatic"}


class _Prompt(StrictBody):
    """What a Messages request and a count_tokens request share: everything that makes the prompt."""

    HARMLESS: ClassVar[Mapping[str, str]] = {
        "cache_control": "automatic prompt caching: prefix reuse here is automatic",
        "service_tier": "Anthropic's capacity tier: one tier here",
        "inference_geo": "where Anthropic runs the model: here, on this server"}
    REFUSED: ClassVar[Mapping[str, Refused]] = {
        "container": Refused("code-execution containers are not supported"),
        "mcp_servers": Refused("MCP servers are not supported: call tools from the client"),
        "context_management": Refused("server-side context editing is not supported")}

    model: str
    messages: list[dict[str, Any]] = Field(min_length=1)
    system: str | list[dict[str, Any]] | None = None
    tools: list[dict[str, Any]] = Field(default_factory=list)
    tool_choice: dict[str, Any] | None = None
    thinking: dict[str, Any] | None = None
    output_config: dict[str, Any] | None = None  # {"format": {"type": "json_schema", "schema": ...}}
    output_format: dict[str, Any] | None = None  # the structured-outputs beta's name for output_config.format

    def chat_options(self) -> dict[str, Any]:
        """Tools, tool_choice and the thinking switch in ChatModel's terms (OpenAI chat's function specs)."""
        choice, parallel = _tool_choice(self.tool_choice)
        return {"tools": [_function_spec(tool, i) for i, tool in enumerate(self.tools)] or None,
                "tool_choice": choice, "parallel_tool_calls": parallel, "thinking": _thinking(self.thinking)}

    def chat_messages(self) -> list[Message]:
        system = [] if self.system is None else [{"role": "system", "content": _system_text(self.system)}]
        out: list[Message] = []
        for i, raw in enumerate(self.messages):
            message = parse_part(_Message, raw, f"messages[{i}]")
            out += _translate(message, f"messages[{i}]")
        return system + out


class MessagesRequest(_Prompt):
    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = None
    # Newer Anthropic clients no longer have these as arguments (send them with extra_body=...); older ones do.
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stream: bool = False
    metadata: dict[str, Any] | None = None
    seed: int | None = None  # an extension (extra_body={"seed": ...}): the same seed gives the same answer

    def sampling(self) -> SamplingFields:
        return SamplingFields(max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p,
                              top_k=self.top_k, seed=self.seed, stop=self.stop_sequences,
                              output=self._output())

    def _output(self) -> OutputFormat | None:
        """``output_config.format`` ({"type": "json_schema", "schema": ...}), for grammar-constrained decoding."""
        config = dict(self.output_config or {})
        unknown = sorted(set(config) - {"format", "effort"})
        if unknown:
            raise unsupported(f"output_config.{unknown[0]}", "not supported: output_config takes format")
        if config.get("effort") not in (None, "high"):
            raise unsupported("output_config.effort", "effort levels are not supported (high is what the model does)")
        if config.get("format") is not None and self.output_format is not None:
            raise unsupported("output_format", "give output_config.format or output_format, not both")
        output_format = config.get("format", self.output_format)
        if output_format is None:
            return None
        if not isinstance(output_format, dict) or output_format.get("type") != "json_schema" \
                or not isinstance(output_format.get("schema"), dict):
            raise unsupported("output_config.format", 'expected {"type": "json_schema", "schema": {...}}')
        return OutputFormat.json_schema(dict(output_format["schema"]), "output_config.format.schema")


class CountTokensRequest(_Prompt):
    pass


class _Message(StrictBody):
    role: Literal["user", "assistant"]
    content: str | list[dict[str, Any]]


def _system_text(system: str | list[dict[str, Any]]) -> str:
    if isinstance(system, str):
        return system
    return "".join(_text_block(block, f"system[{j}]") for j, block in enumerate(system))


def _text_block(block: object, where: str) -> str:
    if isinstance(block, dict) and block.get("type") == "text" and isinstance(block.get("text"), str):
        return str(block["text"])
    raise APIError(400, f"{where}: expected a text block, got {block!r:.80}", "invalid_request_error", param=where)


def _translate(message: _Message, where: str) -> list[Message]:
    """One Anthropic message -> chat messages: tool results become ``tool`` messages, tool uses ``tool_calls``."""
    if isinstance(message.content, str):
        return [{"role": message.role, "content": message.content}]
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    results: list[Message] = []
    for j, block in enumerate(message.content):
        at = f"{where}.content[{j}]"
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text":
            texts.append(_text_block(block, at))
        elif kind == "tool_use" and message.role == "assistant":
            use = parse_part(_ToolUse, block, at)
            calls.append({"id": use.id, "type": "function",
                          "function": {"name": use.name, "arguments": json.dumps(use.input, ensure_ascii=False)}})
        elif kind == "tool_result" and message.role == "user":
            result = parse_part(_ToolResult, block, at)
            results.append({"role": "tool", "tool_call_id": result.tool_use_id, "content": _result_text(result, at)})
        elif kind in ("thinking", "redacted_thinking") and message.role == "assistant":
            continue
        elif kind in ("image", "document"):
            raise unsupported(at, f"{kind} blocks are not supported: the model reads text")
        else:
            raise APIError(400, f"{at}: unsupported content block {kind!r} in a {message.role} message",
                           "invalid_request_error", param=at)
    if message.role == "assistant":
        turn: Message = {"role": "assistant", "content": "".join(texts)}
        if calls:
            turn["tool_calls"] = calls
        return [turn]
    # Tool results answer the previous turn's calls, so they come before whatever the user adds.
    return results + ([{"role": "user", "content": "".join(texts)}] if texts or not results else [])


class _ToolUse(StrictBody):
    HARMLESS: ClassVar[Mapping[str, str]] = {**_BLOCK_HARMLESS, "caller": "which tool runner made the call"}

    id: str
    name: str
    input: dict[str, Any]


class _ToolResult(StrictBody):
    HARMLESS: ClassVar[Mapping[str, str]] = _BLOCK_HARMLESS

    tool_use_id: str
    content: str | list[dict[str, Any]] = ""
    is_error: bool = False


def _result_text(result: _ToolResult, where: str) -> str:
    if isinstance(result.content, str):
        text = result.content
    else:
        text = "".join(_text_block(block, f"{where}.content[{j}]") for j, block in enumerate(result.content))
    return f"Error: {text}" if result.is_error else text


def _function_spec(tool: dict[str, Any], index: int) -> dict[str, Any]:
    """An Anthropic client tool (``{"name", "description", "input_schema"}``) as a chat function spec."""
    where = f"tools[{index}]"
    if tool.get("type", "custom") != "custom":
        raise unsupported(where, f"server tools ({tool.get('type')!r}) are not supported, only client tools")
    if not isinstance(tool.get("input_schema"), dict):
        raise APIError(400, f"{where}.input_schema: an object (JSON schema) is required", "invalid_request_error",
                       param=where)
    function = {"name": tool.get("name"), "parameters": tool["input_schema"]}
    if "description" in tool:
        function["description"] = tool["description"]
    return {"type": "function", "function": function}


def _tool_choice(choice: dict[str, Any] | None) -> tuple[str | dict[str, Any] | None, bool | None]:
    """Anthropic's tool_choice as (chat tool_choice, parallel_tool_calls)."""
    if choice is None:
        return None, None
    parallel = False if choice.get("disable_parallel_tool_use") else None
    kind = choice.get("type")
    if kind == "tool":
        return {"type": "function", "function": {"name": choice.get("name")}}, parallel
    if kind in ("auto", "any", "none"):
        return {"auto": "auto", "any": "required", "none": "none"}[kind], parallel
    raise unsupported("tool_choice.type", f"expected auto, any, tool or none, got {kind!r}")


def _thinking(thinking: dict[str, Any] | None) -> bool | None:
    """The model's thinking switch: ``enabled`` on, ``disabled`` off, ``adaptive`` (or none) the model's default."""
    kind = (thinking or {}).get("type")
    return {"enabled": True, "disabled": False}.get(kind) if isinstance(kind, str) else None
