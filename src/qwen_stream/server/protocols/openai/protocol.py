"""The OpenAI wire format: pydantic models for requests, responses, stream chunks and errors.

Requests are strict about types (``"max_tokens": "5"`` is an error, as with OpenAI) and ignore unknown fields
(clients send many we do not use). Value limits that belong to sampling (temperature >= 0, ...) are checked once,
by ``SamplingParams``; only what is specific to the HTTP shape is checked here.
"""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer, model_validator

from qwen_stream.inputs.output_format import (
    OutputFormat,
    guided_fields,
    one_format,
    response_format,
    structured_outputs,
)
from qwen_stream.server.pipeline.sampling_fields import SamplingFields
from qwen_stream.types import SEED_MAX, SEED_MIN

if TYPE_CHECKING:
    from qwen_stream.client.choices import TokenUsage

Role = Literal["system", "developer", "user", "assistant", "tool"]
FinishReasonLiteral = Literal["stop", "length", "abort", "tool_calls"]


class _Request(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


# ---------------------------------------------------------------------------------------------- requests


class TextContentPart(_Request):
    type: Literal["text"]
    text: str


class FunctionCallIn(_Request):
    name: str
    arguments: str | dict[str, Any] = "{}"  # OpenAI sends JSON text; an object is accepted too


class ToolCallIn(_Request):
    id: str | None = None
    type: Literal["function"] = "function"
    function: FunctionCallIn


class ChatMessage(_Request):
    role: Role
    # Content parts other than text (image_url, input_audio, file) change what a request means and this server
    # reads text only, so they are refused by name instead of dropped.
    content: str | list[dict[str, Any]] | None = None
    name: str | None = None
    tool_calls: list[ToolCallIn] | None = None  # an assistant turn that called tools
    tool_call_id: str | None = None  # a tool turn: which call it answers
    reasoning_content: str | None = None

    @model_validator(mode="after")
    def _check(self) -> ChatMessage:
        if isinstance(self.content, list):
            for k, part in enumerate(self.content):
                kind = part.get("type")
                if kind != "text":
                    raise ValueError(f"content[{k}] is a {kind!r} part: this model reads text only, so only "
                                     f"'text' content parts are supported")
                if not isinstance(part.get("text"), str):
                    raise ValueError(f"content[{k}].text must be a string")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a 'tool' message needs tool_call_id: the id of the tool call it answers")
        if self.tool_calls and self.role != "assistant":
            raise ValueError("only assistant messages carry tool_calls")
        return self

    def text(self) -> str:
        """The content as one string; list content (``[{"type": "text", ...}]``) is joined."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(str(part["text"]) for part in self.content)

    def as_dict(self) -> dict[str, Any]:
        # "developer" is the newer OpenAI name for the system role.
        role = "system" if self.role == "developer" else self.role
        message: dict[str, Any] = {"role": role, "content": self.text()}
        if self.tool_calls:
            message["tool_calls"] = [call.model_dump(exclude_none=True) for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        if self.role == "tool" and self.name is not None:
            message["name"] = self.name
        if self.reasoning_content is not None:
            message["reasoning_content"] = self.reasoning_content
        return message


class StreamOptions(_Request):
    include_usage: bool = False


class _SamplingFields(_Request):
    """Fields shared by chat and text completions."""

    model: str | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    logit_bias: dict[str, float] | None = None  # token id (as a string, as OpenAI sends it) -> bias in [-100, 100]
    seed: int | None = Field(default=None, ge=SEED_MIN, le=SEED_MAX)  # int64, as OpenAI
    stop: str | list[str] | None = None
    n: int = Field(default=1, ge=1, le=16)
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    ignore_eos: bool = False  # vLLM's extension: benchmarks use it to force exact lengths
    # The answer's format, in any of the ways OpenAI, llama-server and vLLM clients ask for one (at most one per
    # request): {"type": "json_object" | "json_schema", ...} (llama-server: with "schema" beside the type), a bare
    # JSON schema, GBNF text, vLLM's structured_outputs {json | regex | choice | grammar} and guided_* fields. Each
    # is compiled into a grammar by the input side; one that does not compile is a 400 naming its field.
    response_format: dict[str, Any] | None = None
    json_schema: dict[str, Any] | bool | None = None
    grammar: str | None = None
    structured_outputs: dict[str, Any] | None = None
    guided_json: dict[str, Any] | str | None = None
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None

    @property
    def include_usage(self) -> bool:
        return self.stream_options is not None and self.stream_options.include_usage

    def sampling_fields(self, token_limit: int | None, num_logprobs: int | None) -> SamplingFields:
        return SamplingFields(
            max_tokens=token_limit, temperature=self.temperature, top_p=self.top_p, top_k=self.top_k,
            min_p=self.min_p, seed=self.seed, stop=self.stop, presence_penalty=self.presence_penalty,
            frequency_penalty=self.frequency_penalty, repetition_penalty=self.repetition_penalty,
            logprobs=num_logprobs, logit_bias=self.logit_bias, ignore_eos=self.ignore_eos, output=self.output())

    def output(self) -> OutputFormat | None:
        """The one output format the request asks for (two are a 400)."""
        guided = {"guided_json": self.guided_json, "guided_regex": self.guided_regex,
                  "guided_choice": self.guided_choice, "guided_grammar": self.guided_grammar}
        return one_format([
            response_format(self.response_format),
            None if self.json_schema is None else OutputFormat.json_schema(self.json_schema),
            OutputFormat.grammar(self.grammar) if self.grammar else None,  # llama.cpp's "": none
            structured_outputs(self.structured_outputs), guided_fields(guided)])


# Fields that would change what a request means but that this server does not do: refused by name (400), never
# silently dropped. Fields that only tune delivery (store, metadata, service_tier, ...) stay ignored.
UNHONOURED_FIELDS = {
    "prediction": "predicted outputs are not supported",
    "audio": "audio output is not supported: this model writes text only",
    "functions": "the legacy `functions` field is not supported: send `tools`",
    "function_call": "the legacy `function_call` field is not supported: send `tool_choice`",
    "web_search_options": "web search is not supported",
}


class ChatCompletionRequest(_SamplingFields):
    model_config = ConfigDict(strict=True, extra="allow")  # extras are looked at for UNHONOURED_FIELDS only

    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None  # checked by qwen_stream.inputs.tools (400 with the field named)
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    chat_template_kwargs: dict[str, Any] | None = None  # template variables, e.g. {"enable_thinking": false}
    modalities: list[str] | None = None

    @model_validator(mode="after")
    def _check(self) -> ChatCompletionRequest:
        if self.top_logprobs is not None and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs set to true")
        extras = self.model_extra or {}
        for name, why in UNHONOURED_FIELDS.items():
            if extras.get(name) is not None:
                raise ValueError(f"{name}: {why}")
        if self.modalities is not None and set(self.modalities) - {"text"}:
            raise ValueError("modalities: only 'text' output is supported")
        return self

    @property
    def chat_options(self) -> dict[str, Any]:
        """What ChatModel.astream takes besides sampling: tools, tool_choice, ..."""
        return {"tools": self.tools, "tool_choice": self.tool_choice, "parallel_tool_calls": self.parallel_tool_calls,
                "chat_template_kwargs": self.chat_template_kwargs}

    def sampling(self) -> SamplingFields:
        limit = self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens
        # How many alternatives per token the engine must report (None: no logprobs at all).
        return self.sampling_fields(limit, (self.top_logprobs or 0) if self.logprobs else None)


class CompletionRequest(_SamplingFields):
    prompt: str | list[str]
    logprobs: int | None = Field(default=None, ge=0, le=5)
    echo: bool = False
    suffix: str | None = None  # text after the cursor: fill in the middle (server/protocols/openai/fim_completions.py)

    @model_validator(mode="after")
    def _check(self) -> CompletionRequest:
        if isinstance(self.prompt, list) and not self.prompt:
            raise ValueError("prompt must not be an empty list")
        return self

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def sampling(self) -> SamplingFields:
        return self.sampling_fields(self.max_tokens, self.logprobs)


# ---------------------------------------------------------------------------------------------- responses


class PromptTokensDetails(_Response):
    cached_tokens: int = 0  # prompt tokens served from a cached prefix (OpenAI's prompt caching field)


class Usage(_Response):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0
    prompt_tokens_details: PromptTokensDetails = Field(default_factory=PromptTokensDetails)

    @classmethod
    def of(cls, usage: TokenUsage) -> Usage:
        return cls(prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                   total_tokens=usage.total_tokens,
                   prompt_tokens_details=PromptTokensDetails(cached_tokens=usage.cached_tokens))


class TopLogprob(_Response):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprobInfo(TopLogprob):
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChatLogprobs(_Response):
    content: list[TokenLogprobInfo] = Field(default_factory=list)


class CompletionLogprobs(_Response):
    tokens: list[str] = Field(default_factory=list)
    token_logprobs: list[float] = Field(default_factory=list)
    top_logprobs: list[dict[str, float]] = Field(default_factory=list)
    text_offset: list[int] = Field(default_factory=list)


class FunctionCallOut(_Response):
    name: str
    arguments: str  # JSON text of an object


class ToolCallOut(_Response):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCallOut


class AssistantMessage(_Response):
    role: Literal["assistant"] = "assistant"
    content: str | None
    reasoning_content: str | None = None  # Qwen3's <think> block, as vLLM and others name it
    tool_calls: list[ToolCallOut] | None = None


class FunctionDelta(_Response):
    name: str | None = None
    arguments: str | None = None


class ToolCallDeltaOut(_Response):
    """A streamed piece of a tool call: the first has index, id, type and function.name; later ones
    function.arguments fragments that join to the final JSON."""

    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: FunctionDelta

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = {k: v for k, v in handler(self).items() if v is not None}
        data["function"] = {k: v for k, v in data["function"].items() if v is not None}
        return data


class ChatChoice(_Response):
    index: int
    message: AssistantMessage
    finish_reason: FinishReasonLiteral | None = None
    logprobs: ChatLogprobs | None = None


class ChatCompletionResponse(_Response):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str | None = None


class DeltaMessage(_Response):
    role: Literal["assistant"] | None = None
    content: str | None = None
    reasoning_content: str | None = None
    tool_calls: list[ToolCallDeltaOut] | None = None

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # As OpenAI sends them: {"role": ..., "content": ""} first, then {"content": ...}, then {} at the end.
        return {k: v for k, v in handler(self).items() if v is not None}


class ChatChunkChoice(_Response):
    index: int
    delta: DeltaMessage
    finish_reason: FinishReasonLiteral | None = None
    logprobs: ChatLogprobs | None = None


class ChatCompletionChunk(_Response):
    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChatChunkChoice]
    usage: Usage | None = None


class CompletionChoice(_Response):
    index: int
    text: str
    finish_reason: FinishReasonLiteral | None = None
    logprobs: CompletionLogprobs | None = None


class CompletionResponse(_Response):
    """Both the whole answer and, with ``stream``, each chunk (OpenAI uses one shape for both)."""

    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = None


class ModelCard(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "qwen-stream"
    context_length: int | None = None


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]
