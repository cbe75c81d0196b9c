"""One request seen from its reader: the rules every reader of engine outputs shares, written once.

The sync stream, the async stream and the offline batch each own one :class:`RequestConsumer` per request. It
submits the request, turns each TokenOutput into a StreamEvent (through the output processor), and:
- raises ``EngineError`` when the backend failed the request;
- aborts the request as soon as a stop string completes the text (the core, which sees ids only, cannot know);
- cancels idempotently, including when the reader is dropped unfinished (garbage collection frees its slot).
"""

from __future__ import annotations

from qwen_stream.engine.backend import EngineBackend, OutputSink
from qwen_stream.errors import EngineError
from qwen_stream.output.processor import OutputProcessor
from qwen_stream.types import SamplingParams, StreamEvent, TokenOutput


class RequestConsumer:
    def __init__(self, engine: EngineBackend, processor: OutputProcessor) -> None:
        self.engine = engine
        self.request_id = ""
        self.final: StreamEvent | None = None  # the last event, once finished
        self._processor = processor
        self._done = False

    def submit(self, prompt_ids: list[int], params: SamplingParams, output: OutputSink) -> str:
        """Submit the request; the backend hands its outputs to ``output``, which feeds ``process`` later."""
        self.request_id = self.engine.submit(prompt_ids, params, output)
        return self.request_id

    @property
    def finished(self) -> bool:
        """True once the last event was made, an error was raised, or the request was cancelled."""
        return self._done

    def process(self, out: TokenOutput) -> StreamEvent:
        """The event for one output; EngineError if the backend failed the request. Call only while unfinished."""
        if out.error is not None:
            self._done = True
            raise EngineError(out.error)
        event = self._processor.process(out)
        if self._processor.stopped_by_string and out.finish_reason is None:
            self.engine.abort(self.request_id)  # the text is complete: stop computing at once
        if event.finished:
            self._done = True
            self.final = event
        return event

    def cancel(self) -> None:
        """Stop generating now (idempotent); no final event follows."""
        if not self._done:
            self._done = True
            if self.request_id:
                self.engine.abort(self.request_id)

    def __del__(self) -> None:
        # A reader dropped unfinished frees its slot. __init__ may not have run to the end, hence the lookups.
        request_id = self.__dict__.get("request_id", "") if hasattr(self, "__dict__") else ""
        if not getattr(self, "_done", True) and request_id:
            self.engine.abort(request_id)
