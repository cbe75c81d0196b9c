"""Ollama's API (``/api/chat``, ``/api/generate``): request bodies, ``options`` mapped to sampling parameters,
and Ollama's error shape ``{"error": "message"}``.

``stream`` defaults to true, as Ollama's does. ``options`` read: ``temperature``, ``top_p``, ``top_k``,
``num_predict`` (absent, -1 and -2: no limit, so the rest of the window), ``seed``, ``stop``, ``repeat_penalty``,
``presence_penalty``, ``frequency_penalty``; ``format`` ("json" or a JSON schema) by grammar-constrained decoding;
``suffix`` on ``/api/generate`` fills the middle between ``prompt`` and it, on the model's FIM tokens;
options about loading (``num_ctx``, ``num_gpu``, ``num_thread``, ...)
are ignored, as this server loaded its one model at start.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.responses import Response

from qwen_stream.inputs.fim import FimInput
from qwen_stream.inputs.output_format import OutputFormat
from qwen_stream.server.pipeline.bodies import StrictBody, parse_part, unsupported
from qwen_stream.server.pipeline.sampling_fields import SamplingFields

Message = dict[str, Any]


def ollama_error(status: int, message: str, _kind: str, headers: Mapping[str, str]) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers))


class OllamaError(BaseModel):
    """Ollama's error body, as the OpenAPI document declares it."""

    error: str


class Options(StrictBody):
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    num_predict: int | None = None
    seed: int | None = None
    stop: list[str] | None = None
    repeat_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    def sampling(self, output: OutputFormat | None = None) -> SamplingFields:
        limit = self.num_predict if self.num_predict is not None and self.num_predict > 0 else None
        return SamplingFields(max_tokens=limit, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                              seed=self.seed, stop=self.stop, repetition_penalty=self.repeat_penalty,
                              presence_penalty=self.presence_penalty, frequency_penalty=self.frequency_penalty,
                              output=output)


class _Generating(StrictBody):
    model: str = Field(min_length=1)
    stream: bool = True
    options: Options = Field(default_factory=Options)
    format: str | dict[str, Any] | None = None
    think: bool | str | None = None
    keep_alive: float | str | None = None

    def check_supported(self) -> None:
        """400 for what would change the answer's meaning and is not honoured here (nothing, in the shared part)."""

    def thinking(self) -> bool | None:
        """``think``: true/false, or a level ("low", "medium", "high"), which a Qwen model can only switch on."""
        if isinstance(self.think, str):
            return self.think not in ("", "false", "none")
        return self.think

    def sampling(self) -> SamplingFields:
        """``options`` and ``format`` ("json", or a JSON schema)."""
        if self.format == "json":
            return self.options.sampling(OutputFormat.json_object("format"))
        if isinstance(self.format, dict):
            return self.options.sampling(OutputFormat.json_schema(self.format, "format"))
        if self.format:
            raise unsupported("format", f'expected "json" or a JSON schema object, got {self.format!r:.40}')
        return self.options.sampling()


class ChatRequest(_Generating):
    messages: list[dict[str, Any]] = Field(default_factory=list)
    tools: list[dict[str, Any]] = Field(default_factory=list)

    def chat_options(self) -> dict[str, Any]:
        return {"tools": self.tools or None, "thinking": self.thinking()}

    def chat_messages(self) -> list[Message]:
        ids = _CallIds()
        return [_translate(parse_part(_Message, raw, f"messages[{i}]"), f"messages[{i}]", ids)
                for i, raw in enumerate(self.messages)]


class GenerateRequest(_Generating):
    prompt: str = ""
    system: str | None = None
    raw: bool = False
    suffix: str | None = None
    template: str | None = None
    context: list[int] | None = None
    images: list[str] | None = None

    def check_supported(self) -> None:
        super().check_supported()
        for name, why in (("template", "this server always uses the model's own chat template"),
                          ("context", "context token lists are not supported; send the conversation to /api/chat"),
                          ("images", "image input is not supported: the model reads text")):
            if getattr(self, name):
                raise unsupported(name, why)

    def fim_input(self) -> FimInput:
        """With ``suffix``: ``prompt`` is the text before the gap (Ollama's FIM templates leave out ``system``)."""
        return FimInput(self.prompt, self.suffix or "")

    def chat_messages(self) -> list[Message]:
        system = [] if self.system is None else [{"role": "system", "content": self.system}]
        return [*system, {"role": "user", "content": self.prompt}]


class ModelRequest(StrictBody):
    """``/api/show``: Ollama's clients send ``model`` (older ones ``name``)."""

    model: str | None = None
    name: str | None = None


class _Message(StrictBody):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    thinking: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_name: str | None = None


class _CallIds:
    """Ollama's tool calls carry no ids; chat messages pair a tool result with its call by id. Calls get ids in
    order, and each tool result takes the first open call of its ``tool_name`` (or else the oldest open one)."""

    def __init__(self) -> None:
        self._open: list[tuple[str, str]] = []  # (id, function name), oldest first
        self._count = 0

    def call(self, name: str) -> str:
        self._count += 1
        call_id = f"call_{self._count}"
        self._open.append((call_id, name))
        return call_id

    def result(self, name: str | None) -> str:
        for k, (call_id, call_name) in enumerate(self._open):
            if name is None or call_name == name:
                del self._open[k]
                return call_id
        self._count += 1
        return f"call_{self._count}"  # a result with no call before it: the template shows it all the same


def _translate(message: _Message, where: str, ids: _CallIds) -> Message:
    if message.images:
        raise unsupported(f"{where}.images", "image input is not supported: the model reads text")
    # An earlier turn's thinking is not sent back to the model, as Qwen3's template does.
    turn: Message = {"role": message.role, "content": message.content}
    if message.role == "tool":
        turn["tool_call_id"] = ids.result(message.tool_name)
        if message.tool_name:
            turn["name"] = message.tool_name
    elif message.tool_calls:
        turn["tool_calls"] = [_call(parse_part(_ToolCall, call, f"{where}.tool_calls[{j}]"), ids)
                              for j, call in enumerate(message.tool_calls)]
    return turn


class _Function(StrictBody):
    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class _ToolCall(StrictBody):
    function: _Function


def _call(call: _ToolCall, ids: _CallIds) -> dict[str, Any]:
    return {"id": ids.call(call.function.name), "type": "function",
            "function": {"name": call.function.name,
                         "arguments": json.dumps(call.function.arguments, ensure_ascii=False)}}
