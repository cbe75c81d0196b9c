"""``POST /v1/completions``: raw prompts (no chat template) to text_completion objects or SSE chunks."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from qwen_stream.server.generation import Generation, TokenStrings
from qwen_stream.server.protocol import CompletionChoice, CompletionLogprobs, CompletionResponse, new_id, now
from qwen_stream.server.sse import DONE, sse_frame, stream_error_frame
from qwen_stream.types import TokenLogprob


@dataclass(slots=True)
class CompletionReply:
    model: str
    include_usage: bool = False
    want_logprobs: bool = False
    echo_prompts: list[str] | None = None  # per choice: the prompt to put before the text (echo=true)
    id: str = field(default_factory=lambda: new_id("cmpl"))
    created: int = field(default_factory=now)

    def response(self, choices: list[CompletionChoice], usage: object = None) -> CompletionResponse:
        return CompletionResponse(id=self.id, created=self.created, model=self.model, choices=choices,
                                  usage=usage)  # type: ignore[arg-type]


class LogprobsBuilder:
    """Legacy completions logprobs: parallel lists of tokens, logprobs, top alternatives and text offsets."""

    def __init__(self, strings: TokenStrings, offset: int = 0) -> None:
        self._strings = strings
        self._offset = offset

    def build(self, entries: list[TokenLogprob]) -> CompletionLogprobs:
        out = CompletionLogprobs()
        for entry in entries:
            text = self._strings.text(entry.token_id)
            out.tokens.append(text)
            out.token_logprobs.append(entry.logprob)
            out.top_logprobs.append({self._strings.text(tid): lp for tid, lp in entry.top})
            out.text_offset.append(self._offset)
            self._offset += len(text)
        return out


async def stream_completion(gen: Generation, reply: CompletionReply, strings: TokenStrings) -> AsyncIterator[bytes]:
    builders = [LogprobsBuilder(strings) for _ in gen.choices]
    try:
        if reply.echo_prompts:
            for index, prompt in enumerate(reply.echo_prompts):
                yield sse_frame(reply.response([CompletionChoice(index=index, text=prompt)]))
        async for index, event in gen.events():
            logprobs = builders[index].build(event.logprobs) if reply.want_logprobs and event.logprobs else None
            finish = event.finish_reason.value if event.finish_reason is not None else None
            if event.delta or logprobs is not None or finish is not None:
                choice = CompletionChoice(index=index, text=event.delta, finish_reason=finish,  # type: ignore[arg-type]
                                          logprobs=logprobs)
                yield sse_frame(reply.response([choice]))
        if reply.include_usage:
            yield sse_frame(reply.response([], usage=gen.usage))
        yield DONE
    except Exception as exc:  # headers are sent: the error can only travel as an event
        yield stream_error_frame(exc)
        yield DONE  # the stream still ends as every stream does: clients waiting for [DONE] stop waiting
    finally:
        await gen.aclose()


async def collect_completion(gen: Generation, reply: CompletionReply, strings: TokenStrings) -> CompletionResponse:
    texts = [""] * len(gen.choices)
    finish: list[str | None] = [None] * len(gen.choices)
    entries: list[list[TokenLogprob]] = [[] for _ in gen.choices]
    try:
        async for index, event in gen.events():
            texts[index] = event.text
            if event.finish_reason is not None:
                finish[index] = event.finish_reason.value
            if event.logprobs:
                entries[index].extend(event.logprobs)
    finally:
        await gen.aclose()
    prefixes = reply.echo_prompts or [""] * len(gen.choices)
    choices = [
        CompletionChoice(index=i, text=prefixes[i] + texts[i], finish_reason=finish[i],  # type: ignore[arg-type]
                         logprobs=LogprobsBuilder(strings, len(prefixes[i])).build(entries[i])
                         if reply.want_logprobs else None)
        for i in range(len(gen.choices))
    ]
    return reply.response(choices, usage=gen.usage)
