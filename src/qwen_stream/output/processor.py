"""One request's engine outputs (ids) turned into stream events (text, counts, timings, finish reason)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from qwen_stream.output.detokenizer import IncrementalDetokenizer, token_bytes_table
from qwen_stream.output.message import MessageParser, ParsedDelta
from qwen_stream.output.stops import StopStringMatcher
from qwen_stream.types import FinishReason, SamplingParams, StreamEvent, TokenLogprob, TokenOutput

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["OutputProcessor"]


class OutputProcessor:
    """Turns each ``TokenOutput`` of one request into one ``StreamEvent``; make one per request.

    - ``event.delta`` is the new text, ``event.text`` the text so far; joined deltas always equal ``text``.
    - ``event.token_ids`` and ``event.logprobs`` are this event's new tokens only (a cumulative copy per token
      would cost O(n)); ``all_token_ids`` holds them all.
    - Stop token ids (``params.stop_token_ids``, and the special token that ended a request finished with
      STOP by the engine, e.g. eos or ``<|im_end|>``) are counted but never shown as text.
    - When a stop string is reached, the event has ``finish_reason`` STOP, ``stopped_by_string`` becomes True,
      and tokens after the one that completed the stop string are dropped (not counted, not shown): the caller
      must then abort the request in the engine.
    - After the finishing event, ``process`` raises ``RuntimeError``: check ``finished`` and drop late outputs
      (an engine sends one more ABORT output after the caller aborts a request stopped by a string).
    - With a ``parser`` (a chat request whose template knows reasoning or tools), the text after stop strings
      goes through it: ``delta``/``text`` are the answer's content, reasoning and tool calls get their own
      fields, and an answer that called tools and ended normally finishes with TOOL_CALLS.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, params: SamplingParams, *, start_time: float | None = None,
        parser: MessageParser | None = None,
    ) -> None:
        if not isinstance(params, SamplingParams):
            raise TypeError(f"params must be SamplingParams, got {type(params).__name__}")
        self._detok = IncrementalDetokenizer(tokenizer, skip_special_tokens=params.skip_special_tokens)
        self._stops = StopStringMatcher(params.stop) if params.stop else None
        self._stop_ids = frozenset(params.stop_token_ids)
        self._special_ids = token_bytes_table(tokenizer).special_ids
        self._start = time.perf_counter() if start_time is None else float(start_time)
        self._parser = parser
        self._text = ""
        self._reasoning = ""
        self._token_ids: list[int] = []
        self._num_prompt_tokens = 0
        self._num_cached_tokens = 0
        self._ttft: float | None = None
        self._finish: FinishReason | None = None
        self.stopped_by_string = False

    @property
    def finished(self) -> bool:
        return self._finish is not None

    @property
    def finish_reason(self) -> FinishReason | None:
        return self._finish

    @property
    def text(self) -> str:
        return self._text

    @property
    def all_token_ids(self) -> list[int]:
        """Every generated token counted so far (do not mutate)."""
        return self._token_ids

    def process(self, out: TokenOutput) -> StreamEvent:
        """The event for one engine output (its ``delta`` may be "")."""
        if self._finish is not None:
            raise RuntimeError(f"request {out.request_id!r} already finished ({self._finish.value}): no more events")
        if not isinstance(out, TokenOutput):
            raise TypeError(f"process() takes a TokenOutput, got {type(out).__name__}")
        now = time.perf_counter()
        if out.num_prompt_tokens:
            self._num_prompt_tokens = out.num_prompt_tokens
            self._num_cached_tokens = out.num_cached_tokens
        delta, used = self._consume_tokens(out)
        finish = FinishReason.STOP if self.stopped_by_string else out.finish_reason
        if finish is not None and not self.stopped_by_string:
            delta += self._drain()
            if self.stopped_by_string:  # the flushed tail completed a stop string
                finish = FinishReason.STOP
        new_ids = out.new_token_ids[:used] if used < len(out.new_token_ids) else out.new_token_ids
        self._token_ids.extend(new_ids)
        if self._ttft is None and new_ids:
            self._ttft = now - self._start
        parsed = self._parse(delta, finish is not None)
        self._text += parsed.content
        self._reasoning += parsed.reasoning
        calls = self._parser.calls if self._parser is not None else []
        if calls and finish is FinishReason.STOP:
            finish = FinishReason.TOOL_CALLS
        self._finish = finish
        return StreamEvent(
            delta=parsed.content,
            text=self._text,
            token_ids=list(new_ids),
            finish_reason=finish,
            num_prompt_tokens=self._num_prompt_tokens,
            num_generated_tokens=len(self._token_ids),
            time_to_first_token_s=self._ttft,
            elapsed_s=now - self._start,
            logprobs=_first(out.logprobs, used),
            num_cached_tokens=self._num_cached_tokens,
            reasoning_delta=parsed.reasoning,
            reasoning=self._reasoning,
            tool_call_deltas=parsed.tool_calls,
            tool_calls=calls,
            stop_string=self._stops.matched if self._stops is not None and finish is not None else None,
        )

    def _parse(self, text: str, final: bool) -> ParsedDelta:
        if self._parser is None:
            return ParsedDelta(content=text)
        parsed = self._parser.push(text) if text else ParsedDelta()
        if final:
            parsed.extend(self._parser.flush())
        return parsed

    def _consume_tokens(self, out: TokenOutput) -> tuple[str, int]:
        """Detokenize and stop-check this output's tokens; return (safe text, how many tokens count)."""
        ids = out.new_token_ids
        last = len(ids) - 1
        ended_by_token = out.finish_reason is FinishReason.STOP
        parts: list[str] = []
        for k, token_id in enumerate(ids):
            if token_id in self._stop_ids or (ended_by_token and k == last and token_id in self._special_ids):
                continue  # the token that ends the answer is not part of it
            piece = self._detok.push(token_id)
            if not piece:
                continue
            if self._stops is None:
                parts.append(piece)
                continue
            safe, hit = self._stops.push(piece)
            parts.append(safe)
            if hit:
                self.stopped_by_string = True
                return "".join(parts), k + 1
        return "".join(parts), len(ids)

    def _drain(self) -> str:
        """The stream ends: release bytes and text held back, unless they complete a stop string."""
        tail = self._detok.flush()
        if self._stops is None:
            return tail
        safe, hit = self._stops.push(tail)
        if hit:
            self.stopped_by_string = True
            return safe
        return safe + self._stops.flush()


def _first(logprobs: list[TokenLogprob] | None, n: int) -> list[TokenLogprob] | None:
    if logprobs is None or len(logprobs) <= n:
        return logprobs
    return logprobs[:n]
