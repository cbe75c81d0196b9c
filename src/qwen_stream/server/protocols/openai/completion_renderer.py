"""``POST /v1/completions``: raw prompts (no chat template) to text_completion chunks, and the whole
text_completion folded from those same chunks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qwen_stream.output.token_strings import TokenStrings
from qwen_stream.server.protocols.openai.protocol import (
    CompletionChoice,
    CompletionLogprobs,
    CompletionResponse,
    Usage,
    new_id,
    now,
)
from qwen_stream.types import StreamEvent, TokenLogprob

if TYPE_CHECKING:
    from qwen_stream.client.choices import TokenUsage


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


class CompletionRenderer:
    """Completions of ``len(prompts)`` prompts x ``n`` choices each (choice index = prompt * n + j). With ``echo``
    each choice's text starts with its prompt, sent first when streamed; logprobs' text offsets count it."""

    def __init__(self, model: str, prompts: list[str], n: int, strings: TokenStrings, *, echo: bool = False,
                 include_usage: bool = False, want_logprobs: bool = False, fingerprint: str | None = None) -> None:
        self.model = model
        self.fingerprint = fingerprint
        self.id = new_id("cmpl")
        self.created = now()
        self.include_usage = include_usage
        self.want_logprobs = want_logprobs
        self.usage = Usage()
        self._echoes = [prompt for prompt in prompts for _ in range(n)] if echo else []
        count = len(prompts) * n
        self._builders = [LogprobsBuilder(strings, len(self._echoes[i]) if echo else 0) for i in range(count)]
        self._texts = [""] * count
        self._finish: list[Any] = [None] * count
        self._logprobs = [CompletionLogprobs() for _ in range(count)]

    def start(self) -> list[CompletionResponse]:
        return [self._fold(self._response([CompletionChoice(index=i, text=prompt)]))
                for i, prompt in enumerate(self._echoes)]

    def feed(self, event: StreamEvent, index: int = 0) -> list[CompletionResponse]:
        logprobs = self._builders[index].build(event.logprobs) if self.want_logprobs and event.logprobs else None
        finish = event.finish_reason.value if event.finish_reason is not None else None
        if not (event.delta or logprobs is not None or finish is not None):
            return []
        choice = CompletionChoice(index=index, text=event.delta, finish_reason=finish,  # type: ignore[arg-type]
                                  logprobs=logprobs)
        return [self._fold(self._response([choice]))]

    def finish(self, final: StreamEvent | None, usage: TokenUsage) -> list[CompletionResponse]:
        self.usage = Usage.of(usage)
        return [self._response([], self.usage)] if self.include_usage else []

    def whole(self) -> CompletionResponse:
        choices = [CompletionChoice(index=i, text=text, finish_reason=self._finish[i],
                                    logprobs=self._logprobs[i] if self.want_logprobs else None)
                   for i, text in enumerate(self._texts)]
        return self._response(choices, self.usage)

    def _fold(self, chunk: CompletionResponse) -> CompletionResponse:
        for choice in chunk.choices:
            i = choice.index
            self._texts[i] += choice.text
            self._finish[i] = choice.finish_reason or self._finish[i]
            if choice.logprobs is not None:
                for name in ("tokens", "token_logprobs", "top_logprobs", "text_offset"):
                    getattr(self._logprobs[i], name).extend(getattr(choice.logprobs, name))
        return chunk

    def _response(self, choices: list[CompletionChoice], usage: Usage | None = None) -> CompletionResponse:
        return CompletionResponse(id=self.id, created=self.created, model=self.model, choices=choices, usage=usage,
                                  system_fingerprint=self.fingerprint)
