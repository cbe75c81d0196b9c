"""The OpenAI wire format's answers: pydantic models for responses and stream chunks (requests: requests.py)."""

from __future__ import annotations

import hashlib
import time
import uuid
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

if TYPE_CHECKING:
    from qwen_stream.client.choices import TokenUsage

FinishReasonLiteral = Literal["stop", "length", "abort", "tool_calls"]


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


def system_fingerprint(model_name: str, engine_name: str) -> str:
    """OpenAI's ``system_fingerprint``: what answered (this build, the model, what computes it); answers with the
    same seed and the same fingerprint are the same answers."""
    from qwen_stream import __version__

    return "fp_" + hashlib.sha256(f"{__version__}:{model_name}:{engine_name}".encode()).hexdigest()[:10]


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex}"


def now() -> int:
    return int(time.time())


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
    system_fingerprint: str | None = None  # which build of the server answered (seed + fingerprint: same answer)


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
    system_fingerprint: str | None = None


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
    system_fingerprint: str | None = None


class ModelCard(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "qwen-stream"
    context_length: int | None = None
    capabilities: list[str] | None = None  # Ollama's names: completion, embedding, insert, tools, thinking


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelCard]
