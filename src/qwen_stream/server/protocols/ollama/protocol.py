"""Ollama's API (``/api/chat``, ``/api/generate``): request bodies, ``options`` mapped to sampling parameters,
and Ollama's error shape ``{"error": "message"}``.

``stream`` defaults to true, as Ollama's does. ``options`` read: ``temperature``, ``top_p``, ``top_k``, ``min_p``, ``repeat_last_n`` (-1 or 0),
``num_predict`` (absent, -1 and -2: no limit, so the rest of the window), ``seed``, ``stop``, ``repeat_penalty``,
``presence_penalty``, ``frequency_penalty``; ``format`` ("json" or a JSON schema) by grammar-constrained decoding;
``suffix`` on ``/api/generate`` fills the middle between ``prompt`` and it, on the model's FIM tokens;
options about loading (``num_ctx``, ``num_gpu``, ``num_thread``, ...) are
read and left alone, as this server loads each model once; other options that would change the answer
(``mirostat``, ``typical_p``, ``tfs_z``) and fields Ollama does not have are a 400 naming them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar, Literal

from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.responses import Response

from qwen_stream.inputs.fim import FimInput
from qwen_stream.inputs.output_format import OutputFormat
from qwen_stream.server.pipeline.bodies import Refused, StrictBody, parse_part, unsupported
from qwen_stream.server.pipeline.sampling_fields import SamplingFields

Message = dict[str, Any]


def ollama_error(status: int, message: str, _kind: str, headers: Mapping[str, str]) -> Response:
    return JSONResponse({"error": message}, status_code=status, headers=dict(headers))


class OllamaError(BaseModel):
    """Ollama's error body, as the OpenAPI document declares it."""

    error: str


_LOADED_ONCE = "how the model is loaded: this server loads each model once, with its own window"


class Options(StrictBody):
    HARMLESS: ClassVar[Mapping[str, str]] = {
        **{name: _LOADED_ONCE for name in ("num_ctx", "num_batch", "num_gpu", "main_gpu", "low_vram", "use_mmap",
                                           "use_mlock", "num_thread", "numa", "vocab_only", "f16_kv")},
        "num_keep": "tokens kept when the context shifts: a conversation is folded to fit before, never shifted",
        "penalize_newline": "a field Ollama no longer reads",
        "mirostat_tau": "read only with mirostat, which is refused unless 0",
        "mirostat_eta": "read only with mirostat, which is refused unless 0"}
    REFUSED: ClassVar[Mapping[str, Refused]] = {
        "mirostat": Refused("mirostat sampling is not supported", (0,)),
        "typical_p": Refused("typical sampling is not supported", (1.0,)),
        "tfs_z": Refused("tail-free sampling is not supported", (1.0,))}

    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    num_predict: int | None = None
    seed: int | None = None
    stop: list[str] | None = None
    repeat_penalty: float | None = None
    repeat_last_n: int | None = None  # penalties here look at the whole prompt and answer (-1); 0 turns them off
    presence_penalty: float | None = None
    frequency_penalty: float | None = None

    def sampling(self, output: OutputFormat | None = None) -> SamplingFields:
        limit = self.num_predict if self.num_predict is not None and self.num_predict > 0 else None
        penalties = (self.repeat_penalty, self.presence_penalty, self.frequency_penalty)
        if self.repeat_last_n == 0:  # Ollama's "disabled"
            penalties = (1.0, 0.0, 0.0)
        elif self.repeat_last_n not in (None, -1) and penalties != (None, None, None):
            raise unsupported("options.repeat_last_n", "penalties here look at the whole prompt and answer: give "
                                                       "-1 (or 0 to turn them off)")
        return SamplingFields(max_tokens=limit, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
                              min_p=self.min_p, seed=self.seed, stop=self.stop, repetition_penalty=penalties[0],
                              presence_penalty=penalties[1], frequency_penalty=penalties[2], output=output)


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
    HARMLESS: ClassVar[Mapping[str, str]] = {"tool_call_id": "Ollama's id of the call a result answers: results "
                                                            "are paired with calls by order and tool_name"}

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
    HARMLESS: ClassVar[Mapping[str, str]] = {"index": "the call's position, which its place in the list says"}

    name: str
    arguments: dict[str, Any] = Field(default_factory=dict)


class _ToolCall(StrictBody):
    HARMLESS: ClassVar[Mapping[str, str]] = {"id": "Ollama's call id: calls are paired with results by order",
                                            "type": "always a function call"}

    function: _Function


def _call(call: _ToolCall, ids: _CallIds) -> dict[str, Any]:
    return {"id": ids.call(call.function.name), "type": "function",
            "function": {"name": call.function.name,
                         "arguments": json.dumps(call.function.arguments, ensure_ascii=False)}}
