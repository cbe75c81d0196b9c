"""One llama.cpp-style answer (``/completion``, ``/infill``): the engine's events cut by the editor's rules
(``n_indent``, ``t_max_predict_ms``: output/editor_stops.py), and llama.cpp's chunks and totals.

Not streamed: one JSON object (``content``, ``tokens``, ``stop``, ``stop_type``, ``tokens_predicted``,
``timings``, ``completion_probabilities`` with ``n_probs``, ...). Streamed: ``data: {...}`` lines, one per piece of
text (its ``tokens`` and probabilities), the last with ``stop: true`` and the totals; no ``[DONE]``, as llama.cpp's
own stream.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from qwen_stream.output.editor_stops import IndentStop, TimeStop
from qwen_stream.output.token_strings import TokenStrings
from qwen_stream.server.pipeline.generation import Generation
from qwen_stream.server.protocols.llamacpp.protocol import LlamaSampling, pick_fields, timings
from qwen_stream.server.wire.sse import stream_error_frame
from qwen_stream.types import FinishReason, StreamEvent, TokenLogprob


@dataclass(slots=True)
class Piece:
    text: str
    token_ids: list[int]
    logprobs: list[TokenLogprob]


@dataclass(slots=True)
class LlamaRun:
    gen: Generation
    body: LlamaSampling
    model: str
    prompt_tokens: int
    strings: TokenStrings
    truncated: bool = False  # /infill: the context was cut to fit (the FIM prompt's own truncation)
    settings: dict[str, Any] = field(default_factory=dict)  # /completion: generation_settings and prompt
    content: str = ""
    token_ids: list[int] = field(default_factory=list)
    probs: list[dict[str, Any]] = field(default_factory=list)
    stop_type: str = "none"  # llama.cpp's: "eos", "limit", "word" (a stop string) or "none" (not finished)
    stopping_word: str = ""
    last: StreamEvent | None = None

    async def pieces(self) -> AsyncIterator[Piece]:
        """The text as it comes, already cut; ends (aborting the engine request) when a rule ends it."""
        indent, clock = IndentStop(self.body.n_indent), TimeStop(self.body.t_max_predict_ms)
        try:
            async for _, event in self.gen.events():
                self.last = event
                if self.body.warm_up:
                    continue  # the prompt is cached now; the one token sampled with it is not the answer
                delta, ended = self._cut(event, indent, clock)
                piece = Piece(delta, list(event.token_ids), list(event.logprobs or ()))
                self.content += delta
                self.token_ids += piece.token_ids
                self.probs += self.probabilities(piece)
                if delta or piece.token_ids:
                    yield piece
                if ended:
                    self.stop_type = "limit"
                    return
                if event.finish_reason is not None:
                    self._finished(event)
            if self.body.warm_up:
                self.stop_type = "limit"
        finally:
            await self.gen.aclose()

    def _cut(self, event: StreamEvent, indent: IndentStop, clock: TimeStop) -> tuple[str, bool]:
        cut = indent.cut(self.content + event.delta)
        if cut is not None:
            return (self.content + event.delta)[len(self.content):cut], True
        ttft = event.time_to_first_token_s or 0.0
        return event.delta, clock.reached(event.delta, (event.elapsed_s - ttft) * 1000)

    def _finished(self, event: StreamEvent) -> None:
        if event.finish_reason is FinishReason.LENGTH:
            self.stop_type = "limit"
        elif event.stop_string is not None:
            self.stop_type, self.stopping_word = "word", event.stop_string
        elif event.finish_reason is FinishReason.STOP:
            self.stop_type = "eos"

    def probabilities(self, piece: Piece) -> list[dict[str, Any]]:
        """llama.cpp's ``completion_probabilities`` entries for a piece's tokens (``n_probs`` > 0)."""
        if not self.body.n_probs:
            return []
        return [{**self._token(entry.token_id, entry.logprob),
                 "top_logprobs": [self._token(i, lp) for i, lp in entry.top]} for entry in piece.logprobs]

    def _token(self, token_id: int, logprob: float) -> dict[str, Any]:
        text, raw = self.strings.lookup(token_id)
        return {"id": token_id, "token": text, "bytes": list(raw), "logprob": logprob}

    @property
    def predicted(self) -> int:
        return 0 if self.body.warm_up else len(self.token_ids)

    def chunk(self, piece: Piece) -> dict[str, Any]:
        """A streamed piece: its text, token ids (as llama.cpp streams them) and probabilities."""
        body = {**self._base(piece.text), "tokens": piece.token_ids}
        if self.body.n_probs:
            body["completion_probabilities"] = self.probabilities(piece)
        return pick_fields(body, self.body.response_fields)

    def final(self, whole: bool) -> dict[str, Any]:
        """The whole answer, or (streamed) the last chunk: no text, the totals."""
        cached = self.last.num_cached_tokens if self.last is not None else 0
        body = {**self._base(self.content if whole else ""), "tokens": self.token_ids if whole and self.body.return_tokens else [],
                "stop": True, "model": self.model, "stop_type": self.stop_type, "stopping_word": self.stopping_word,
                "tokens_cached": cached, "truncated": self.truncated, "has_new_line": "\n" in self.content,
                "timings": timings(self.last, self.predicted), **self.settings}
        if self.body.n_probs and whole:
            body["completion_probabilities"] = self.probs
        return pick_fields(body, self.body.response_fields)

    def _base(self, content: str) -> dict[str, Any]:
        return {"index": 0, "content": content, "stop": False, "id_slot": -1, "tokens_predicted": self.predicted,
                "tokens_evaluated": self.prompt_tokens}


async def whole(run: LlamaRun) -> dict[str, Any]:
    async for _ in run.pieces():
        pass
    return run.final(whole=True)


async def stream(run: LlamaRun) -> AsyncIterator[bytes]:
    try:
        async for piece in run.pieces():
            yield frame(run.chunk(piece))
        yield frame(run.final(whole=False))
    except Exception as exc:  # headers are sent: the error can only travel as an event
        yield stream_error_frame(exc)


def frame(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()
