"""``POST /v1/chat/completions``: engine events to OpenAI chat chunks, and the chat.completion object folded from
those same chunks (so a whole answer is always what its stream adds up to)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qwen_stream.output.token_strings import TokenStrings
from qwen_stream.server.protocols.openai.protocol import (
    AssistantMessage,
    ChatChoice,
    ChatChunkChoice,
    ChatCompletionChunk,
    ChatCompletionResponse,
    ChatLogprobs,
    DeltaMessage,
    FunctionCallOut,
    FunctionDelta,
    TokenLogprobInfo,
    ToolCallDeltaOut,
    ToolCallOut,
    TopLogprob,
    Usage,
    new_id,
    now,
)
from qwen_stream.server.wire.errors import ErrorDetail, ErrorResponse
from qwen_stream.types import StreamEvent, TokenLogprob, ToolCallDelta

if TYPE_CHECKING:
    from qwen_stream.client.choices import TokenUsage


def chat_logprobs(entries: list[TokenLogprob] | None, strings: TokenStrings) -> ChatLogprobs | None:
    if entries is None:
        return None
    return ChatLogprobs(content=[_token_info(entry, strings) for entry in entries])


def _token_info(entry: TokenLogprob, strings: TokenStrings) -> TokenLogprobInfo:
    text, raw = strings.lookup(entry.token_id)
    top = []
    for token_id, logprob in entry.top:
        alt_text, alt_raw = strings.lookup(token_id)
        top.append(TopLogprob(token=alt_text, logprob=logprob, bytes=list(alt_raw)))
    return TokenLogprobInfo(token=text, logprob=entry.logprob, bytes=list(raw), top_logprobs=top)


@dataclass(slots=True)
class _Folded:
    """One choice's message so far, folded from its chunks."""

    content: str = ""
    reasoning: str = ""
    calls: dict[int, ToolCallOut] = field(default_factory=dict)  # tool call index -> the call so far
    finish_reason: Any = None
    logprobs: list[TokenLogprobInfo] = field(default_factory=list)

    def add(self, choice: ChatChunkChoice) -> None:
        delta = choice.delta
        self.content += delta.content or ""
        self.reasoning += delta.reasoning_content or ""
        for piece in delta.tool_calls or ():
            call = self.calls.setdefault(piece.index, ToolCallOut(id=piece.id or "", function=FunctionCallOut(
                name=piece.function.name or "", arguments="")))
            call.function.arguments += piece.function.arguments or ""
        if choice.logprobs is not None:
            self.logprobs += choice.logprobs.content
        self.finish_reason = choice.finish_reason or self.finish_reason

    def message(self) -> AssistantMessage:
        calls = [self.calls[i] for i in sorted(self.calls)]
        return AssistantMessage(content=self.content if self.content or not calls else None,
                                reasoning_content=self.reasoning or None, tool_calls=calls or None)


class ChatRenderer:
    """A chat answer of ``n`` choices: a role chunk per choice, content chunks, a finish chunk per choice, usage
    (when asked for); ``whole()`` is the chat.completion those chunks make."""

    def __init__(self, model: str, n: int, strings: TokenStrings, *, include_usage: bool = False,
                 want_logprobs: bool = False, fingerprint: str | None = None) -> None:
        self.model = model
        self.fingerprint = fingerprint
        self.id = new_id("chatcmpl")
        self.created = now()
        self.include_usage = include_usage
        self.want_logprobs = want_logprobs
        self.usage = Usage()
        self._strings = strings
        self._choices = [_Folded() for _ in range(n)]

    def start(self) -> list[ChatCompletionChunk]:
        return [self._chunk(ChatChunkChoice(index=i, delta=DeltaMessage(role="assistant", content="")))
                for i in range(len(self._choices))]

    def feed(self, event: StreamEvent, index: int = 0) -> list[ChatCompletionChunk]:
        chunks = []
        # An event may carry no text yet (held back for a possible stop string) but still carry logprobs.
        if event.delta or event.reasoning_delta or event.tool_call_deltas or (self.want_logprobs and event.logprobs):
            delta = DeltaMessage(content=event.delta or None, reasoning_content=event.reasoning_delta or None,
                                 tool_calls=[_tool_call_delta(d) for d in event.tool_call_deltas] or None)
            if delta.content is None and delta.reasoning_content is None and delta.tool_calls is None:
                delta.content = ""  # a logprobs-only chunk
            logprobs = chat_logprobs(event.logprobs, self._strings) if self.want_logprobs else None
            chunks.append(self._chunk(ChatChunkChoice(index=index, delta=delta, logprobs=logprobs)))
        if event.finish_reason is not None:
            finish = ChatChunkChoice(index=index, delta=DeltaMessage(), finish_reason=event.finish_reason.value)
            chunks.append(self._chunk(finish))
        for chunk in chunks:
            self._choices[index].add(chunk.choices[0])
        return chunks

    def finish(self, final: StreamEvent | None, usage: TokenUsage) -> list[ChatCompletionChunk]:
        self.usage = Usage.of(usage)
        if not self.include_usage:
            return []
        return [ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=[],
                                    usage=self.usage, system_fingerprint=self.fingerprint)]

    def whole(self) -> ChatCompletionResponse:
        choices = [ChatChoice(index=i, message=c.message(), finish_reason=c.finish_reason,
                              logprobs=ChatLogprobs(content=c.logprobs) if self.want_logprobs else None)
                   for i, c in enumerate(self._choices)]
        return ChatCompletionResponse(id=self.id, created=self.created, model=self.model, choices=choices,
                                      usage=self.usage, system_fingerprint=self.fingerprint)

    def _chunk(self, choice: ChatChunkChoice) -> ChatCompletionChunk:
        return ChatCompletionChunk(id=self.id, created=self.created, model=self.model, choices=[choice],
                                   system_fingerprint=self.fingerprint)


def _tool_call_delta(delta: ToolCallDelta) -> ToolCallDeltaOut:
    if delta.id is not None:  # the first piece of a call
        return ToolCallDeltaOut(index=delta.index, id=delta.id, type="function",
                                function=FunctionDelta(name=delta.name, arguments=delta.arguments))
    return ToolCallDeltaOut(index=delta.index, function=FunctionDelta(arguments=delta.arguments))


def openai_stream_error(message: str) -> list[ErrorResponse]:
    """An error after the stream started, as an ``{"error": ...}`` event (the OpenAI client raises it)."""
    return [ErrorResponse(error=ErrorDetail(message=message, type="server_error"))]
