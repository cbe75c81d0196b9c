"""The reader side of the seam: engine requests submitted to a backend and read back as streams of events.

Each ``EngineRequest`` (made by the input processor) is submitted as is; its outputs go through an output processor
that makes text, stop strings, and the reasoning and tool calls its ``ParsePlan`` asks for. Closing a stream (or
dropping it, or cancelling its task) aborts its request. ``start`` submits a request's choices together for the
server and ``batch`` runs many at once offline; both abort what they started if anything fails. Embeddings and
rankings (pooled jobs: one vector per request, no text) go through client/pooled.py and come back shaped by
client/vectors.py.
"""

from __future__ import annotations

import queue
import time
from collections.abc import Callable, Sequence
from typing import Any

from qwen_stream.client.choices import Choices
from qwen_stream.client.consumer import RequestConsumer
from qwen_stream.client.pooled import arun_pooled, run_pooled
from qwen_stream.client.streams import AsyncRequestStream, RequestStream
from qwen_stream.client.vectors import Embeddings, Ranking, embeddings, ranking
from qwen_stream.engine.backend import EngineBackend
from qwen_stream.inputs.pooled_request import EmbeddingJob, RankingJob
from qwen_stream.inputs.request import EngineRequest, ParsePlan
from qwen_stream.output.message import MessageParser, make_tool_parser
from qwen_stream.output.processor import OutputProcessor
from qwen_stream.output.reasoning import ReasoningParser
from qwen_stream.types import StreamEvent, TokenOutput


class EngineClient:
    def __init__(self, engine: EngineBackend, tokenizer: Any) -> None:
        self.engine = engine
        self.tokenizer = tokenizer

    def stream(self, request: EngineRequest) -> RequestStream:
        """Submit ``request`` and read it on this thread (``break`` / ``close()`` / Ctrl-C abort it)."""
        return RequestStream(self.engine, request.prompt_ids, request.params, self._processor(request),
                             request.info)

    def astream(self, request: EngineRequest) -> AsyncRequestStream:
        """Submit ``request`` and read it in this event loop (cancelling the reader aborts it)."""
        return AsyncRequestStream(self.engine, request.prompt_ids, request.params, self._processor(request),
                                  request.info)

    def start(self, requests: Sequence[EngineRequest]) -> Choices:
        """Submit every choice now (inside an event loop), so that a refusal comes before anything is answered;
        if one is refused, those already submitted are aborted and the refusal propagates."""
        streams: list[AsyncRequestStream] = []
        try:
            for request in requests:
                streams.append(self.astream(request))
        except BaseException:
            for stream in streams:
                stream.cancel()
            raise
        return Choices(streams, requests)

    def batch(self, requests: Sequence[EngineRequest], *, progress: bool = True) -> list[StreamEvent | None]:
        """Run many requests, as many at once as the engine queues; each one's final event (None if it was
        cancelled). An error or Ctrl-C stops every answer still running."""
        from tqdm.auto import tqdm

        outputs: queue.SimpleQueue[tuple[int, TokenOutput]] = queue.SimpleQueue()
        consumers = [RequestConsumer(self.engine, self._processor(r)) for r in requests]
        capacity = self.engine.max_running + self.engine.max_waiting
        submitted = done = 0
        try:
            with tqdm(total=len(requests), desc="batch", unit="answer", disable=not progress) as bar:
                while done < len(requests):
                    while submitted < len(requests) and submitted - done < capacity:
                        item = requests[submitted]
                        consumers[submitted].submit(item.prompt_ids, item.params, _indexed_sink(outputs, submitted))
                        submitted += 1
                    i, out = outputs.get()
                    if consumers[i].finished:
                        continue  # outputs still queued after a stop string ended this answer
                    if consumers[i].process(out).finished:
                        done += 1
                        bar.update(1)
        finally:
            for consumer in consumers:
                consumer.cancel()
        return [c.final for c in consumers]

    def embed(self, job: EmbeddingJob) -> Embeddings:
        """Every input's vector, read on this thread (Ctrl-C aborts the rest)."""
        return embeddings(job, run_pooled(self.engine, job.requests))

    async def aembed(self, job: EmbeddingJob) -> Embeddings:
        """Every input's vector, in this event loop (cancelling aborts the rest)."""
        return embeddings(job, await arun_pooled(self.engine, job.requests))

    def rank(self, job: RankingJob) -> Ranking:
        return ranking(job, run_pooled(self.engine, job.requests))

    async def arank(self, job: RankingJob) -> Ranking:
        return ranking(job, await arun_pooled(self.engine, job.requests))

    def close(self) -> None:
        self.engine.shutdown()

    def _processor(self, request: EngineRequest) -> OutputProcessor:
        return OutputProcessor(self.tokenizer, request.params, start_time=time.perf_counter(),
                               parser=message_parser(request.parse))


def message_parser(plan: ParsePlan) -> MessageParser | None:
    """The parser a plan asks for: reasoning split out, tool calls read in the model's format (None: plain text)."""
    if not plan.active:
        return None
    reasoning = ReasoningParser(starts_in_reasoning=plan.starts_in_reasoning) if plan.reasoning else None
    tools = None
    if plan.tool_format is not None:
        tools = make_tool_parser(plan.tool_format, plan.tools, max_calls=plan.max_calls)
    return MessageParser(reasoning=reasoning, tools=tools)


def _indexed_sink(into: queue.SimpleQueue[tuple[int, TokenOutput]], index: int) -> Callable[[TokenOutput], None]:
    def sink(out: TokenOutput) -> None:
        into.put((index, out))

    return sink
