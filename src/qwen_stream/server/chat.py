"""``POST /v1/chat/completions``: engine events to OpenAI chat chunks (SSE) or one chat.completion object."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from qwen_stream.server.generation import Generation, TokenStrings
from qwen_stream.server.protocol import (
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
    new_id,
    now,
)
from qwen_stream.server.sse import DONE, sse_frame, stream_error_frame
from qwen_stream.types import StreamEvent, TokenLogprob, ToolCall, ToolCallDelta


@dataclass(slots=True)
class ChatReply:
    """Identity of one chat answer: the same id/created/model on every chunk."""

    model: str
    include_usage: bool = False
    want_logprobs: bool = False
    id: str = field(default_factory=lambda: new_id("chatcmpl"))
    created: int = field(default_factory=now)


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


async def stream_chat(gen: Generation, reply: ChatReply, strings: TokenStrings) -> AsyncIterator[bytes]:
    """SSE frames: a role chunk per choice, content chunks, a finish chunk per choice, usage, [DONE]."""
    try:
        for choice in gen.choices:
            yield _chunk(reply, ChatChunkChoice(index=choice.index, delta=DeltaMessage(role="assistant", content="")))
        async for index, event in gen.events():
            for frame in _event_chunks(reply, index, event, strings):
                yield sse_frame(frame)
        if reply.include_usage:
            yield sse_frame(ChatCompletionChunk(id=reply.id, created=reply.created, model=reply.model, choices=[],
                                                usage=gen.usage))
        yield DONE
    except Exception as exc:  # headers are sent: the error can only travel as an event, as OpenAI does
        yield stream_error_frame(exc)
        yield DONE  # the stream still ends as every stream does: clients waiting for [DONE] stop waiting
    finally:
        # Runs on normal end, on an engine error and when the client disconnects (the generator is closed).
        await gen.aclose()


def _chunk(reply: ChatReply, choice: ChatChunkChoice) -> bytes:
    return sse_frame(ChatCompletionChunk(id=reply.id, created=reply.created, model=reply.model, choices=[choice]))


def _event_chunks(reply: ChatReply, index: int, event: StreamEvent,
                  strings: TokenStrings) -> list[ChatCompletionChunk]:
    chunks = []
    # An event may carry no text yet (held back for a possible stop string) but still carry logprobs.
    if event.delta or event.reasoning_delta or event.tool_call_deltas or (reply.want_logprobs and event.logprobs):
        delta = DeltaMessage(content=event.delta or None, reasoning_content=event.reasoning_delta or None,
                             tool_calls=[_tool_call_delta(d) for d in event.tool_call_deltas] or None)
        if delta.content is None and delta.reasoning_content is None and delta.tool_calls is None:
            delta.content = ""  # a logprobs-only chunk, as before
        choice = ChatChunkChoice(index=index, delta=delta,
                                 logprobs=chat_logprobs(event.logprobs, strings) if reply.want_logprobs else None)
        chunks.append(ChatCompletionChunk(id=reply.id, created=reply.created, model=reply.model, choices=[choice]))
    if event.finish_reason is not None:
        finish = ChatChunkChoice(index=index, delta=DeltaMessage(), finish_reason=event.finish_reason.value)
        chunks.append(ChatCompletionChunk(id=reply.id, created=reply.created, model=reply.model, choices=[finish]))
    return chunks


def _tool_call_delta(delta: ToolCallDelta) -> ToolCallDeltaOut:
    if delta.id is not None:  # the first piece of a call
        return ToolCallDeltaOut(index=delta.index, id=delta.id, type="function",
                                function=FunctionDelta(name=delta.name, arguments=delta.arguments))
    return ToolCallDeltaOut(index=delta.index, function=FunctionDelta(arguments=delta.arguments))


def _message(event: StreamEvent | None) -> AssistantMessage:
    if event is None:
        return AssistantMessage(content="")
    calls: list[ToolCall] = event.tool_calls
    return AssistantMessage(
        content=event.text if event.text or not calls else None,
        reasoning_content=event.reasoning or None,
        tool_calls=[ToolCallOut(id=c.id, function=FunctionCallOut(name=c.name, arguments=c.arguments))
                    for c in calls] or None)


async def collect_chat(gen: Generation, reply: ChatReply, strings: TokenStrings) -> ChatCompletionResponse:
    """Run every choice to the end and build one chat.completion object."""
    last: list[StreamEvent | None] = [None] * len(gen.choices)
    finish: list[str | None] = [None] * len(gen.choices)
    logprobs: list[list[TokenLogprobInfo]] = [[] for _ in gen.choices]
    try:
        async for index, event in gen.events():
            last[index] = event
            if event.finish_reason is not None:
                finish[index] = event.finish_reason.value
            if reply.want_logprobs and event.logprobs:
                logprobs[index].extend(_token_info(entry, strings) for entry in event.logprobs)
    finally:
        await gen.aclose()
    choices = [
        ChatChoice(index=i, message=_message(last[i]), finish_reason=finish[i],  # type: ignore[arg-type]
                   logprobs=ChatLogprobs(content=logprobs[i]) if reply.want_logprobs else None)
        for i in range(len(gen.choices))
    ]
    return ChatCompletionResponse(id=reply.id, created=reply.created, model=reply.model, choices=choices,
                                  usage=gen.usage)
