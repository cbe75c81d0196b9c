"""``POST /infill``, llama.cpp's fill-in-the-middle route for editors, over the one engine.

The request goes through the same admission as every protocol (``start_job``: limits, 429, metrics); the answer
ends where the model ends the middle (end of text, a FIM token), at ``n_predict``, at a stop string, or where
the editor's rules end it (``n_indent``, ``t_max_predict_ms``: output/editor_stops.py). Successive keystrokes
send prompts that share all but their end, which the engine's prefix reuse serves from the slot's cache
(``timings.cache_n`` says how many tokens were).

Not streamed: one JSON object (``content``, ``stop``, ``tokens_predicted``, ``timings``, ``truncated``, ...).
Streamed: ``data: {...}`` lines, one per piece of text, the last with ``stop: true`` and the totals (no
``[DONE]``, as llama.cpp's own ``/completion`` stream).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from qwen_stream.output.editor_stops import IndentStop, TimeStop
from qwen_stream.server.auth import api_key_dependency
from qwen_stream.server.pipeline.admission import respond_json
from qwen_stream.server.pipeline.bodies import parse_body
from qwen_stream.server.pipeline.generation import Generation
from qwen_stream.server.pipeline.job import ChatJob, start_job
from qwen_stream.server.protocols.infill.protocol import InfillRequest, pick_fields, timings
from qwen_stream.server.wire.sse import SSEResponse, stream_error_frame
from qwen_stream.types import FinishReason, StreamEvent

if TYPE_CHECKING:
    from qwen_stream.server.state import ServerState

ROUTE = "/infill"


def infill_router(state: ServerState) -> APIRouter:
    router = APIRouter(dependencies=[Depends(api_key_dependency(state.api_key))])

    @router.post(ROUTE, responses={200: {"content": {"text/event-stream": {}}}})
    async def infill(request: Request) -> Response:
        body = await parse_body(request, InfillRequest)
        body.check_supported()
        job = ChatJob([], body.sampling(), model=body.model, fim=[body.fim_input()])
        started = await start_job(state, job, ROUTE)
        info = started.requests[0].info
        run = InfillRun(started.gen, body, started.model_name, info.truncated, info.num_tokens)
        if body.stream:
            return SSEResponse(_stream(run))
        return await respond_json(request, _whole(run))

    return router


@dataclass(slots=True)
class InfillRun:
    """One /infill answer: the engine's events cut by the editor's rules, and the totals llama.cpp reports."""

    gen: Generation
    body: InfillRequest
    model: str
    truncated: bool
    prompt_tokens: int
    content: str = ""
    token_ids: list[int] = field(default_factory=list)
    stop_type: str = "none"  # llama.cpp's: "eos", "limit", "word" (a stop string) or "none" (not finished)
    stopping_word: str = ""
    last: StreamEvent | None = None

    async def pieces(self) -> AsyncIterator[str]:
        """The text as it comes, already cut; ends (aborting the engine request) when a rule ends it."""
        indent, clock = IndentStop(self.body.n_indent), TimeStop(self.body.t_max_predict_ms)
        try:
            async for _, event in self.gen.events():
                self.last = event
                if self.body.warm_up:
                    continue  # the prompt is cached now; the one token sampled with it is not the answer
                delta, ended = self._cut(event, indent, clock)
                self.content += delta
                self.token_ids += event.token_ids
                if delta:
                    yield delta
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

    @property
    def predicted(self) -> int:
        return 0 if self.body.warm_up else len(self.token_ids)

    def chunk(self, content: str) -> dict[str, Any]:
        return {"index": 0, "content": content, "tokens": [], "stop": False, "id_slot": -1,
                "tokens_predicted": self.predicted, "tokens_evaluated": self.prompt_tokens}

    def final(self, content: str) -> dict[str, Any]:
        cached = self.last.num_cached_tokens if self.last is not None else 0
        body = {**self.chunk(content), "stop": True, "model": self.model, "stop_type": self.stop_type,
                "stopping_word": self.stopping_word, "tokens_cached": cached, "truncated": self.truncated,
                "has_new_line": "\n" in self.content, "timings": timings(self.last, self.predicted)}
        return pick_fields(body, self.body.response_fields)


async def _whole(run: InfillRun) -> dict[str, Any]:
    async for _ in run.pieces():
        pass
    return run.final(run.content)


async def _stream(run: InfillRun) -> AsyncIterator[bytes]:
    try:
        async for piece in run.pieces():
            yield _frame(pick_fields(run.chunk(piece), run.body.response_fields))
        yield _frame(run.final(""))
    except Exception as exc:  # headers are sent: the error can only travel as an event
        yield stream_error_frame(exc)


def _frame(data: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}\n\n".encode()
