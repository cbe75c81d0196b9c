"""Prometheus metrics for the server, in a registry of their own so several apps can live in one process."""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from qwen_stream.types import StreamEvent

# Buckets sized for CPU serving: tokens every few ms to a few hundred ms, answers up to minutes.
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0)
_ITL_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)
_E2E_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 320.0, 640.0)

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class ServerMetrics:
    """Latency histograms, token counters and engine gauges; ``observe(event)`` is fed every stream event."""

    def __init__(self, model_name: str) -> None:
        self.registry = CollectorRegistry()
        # Per-request series carry the route too (/v1/chat/completions, /v1/messages, /api/chat, ...): one engine
        # serves every protocol, and an operator wants to see which of them the load comes from.
        labels = ["model", "route"]
        self.model_name = model_name
        self.ttft = Histogram("qwen_stream_time_to_first_token_seconds", "Time from request to first token",
                              labels, buckets=_TTFT_BUCKETS, registry=self.registry)
        self.itl = Histogram("qwen_stream_inter_token_latency_seconds", "Time between consecutive tokens",
                             labels, buckets=_ITL_BUCKETS, registry=self.registry)
        self.e2e = Histogram("qwen_stream_e2e_request_latency_seconds", "Time from request to last token",
                             labels, buckets=_E2E_BUCKETS, registry=self.registry)
        self.prompt_tokens = Counter("qwen_stream_prompt_tokens", "Prompt tokens processed", labels,
                                     registry=self.registry)
        self.generation_tokens = Counter("qwen_stream_generation_tokens", "Tokens generated", labels,
                                         registry=self.registry)
        self.embedding_inputs = Counter("qwen_stream_embedding_inputs", "Texts embedded or scored (embeddings, "
                                        "rerank, score)", labels, registry=self.registry)
        self.embedding_tokens = Counter("qwen_stream_embedding_tokens", "Prompt tokens of the texts embedded or "
                                        "scored", labels, registry=self.registry)
        self.requests = Counter("qwen_stream_requests", "Finished requests by finish reason",
                                [*labels, "finish_reason"], registry=self.registry)
        self.running = Gauge("qwen_stream_requests_running", "Requests decoding in the engine", ["model"],
                             registry=self.registry)
        self.waiting = Gauge("qwen_stream_requests_waiting", "Requests queued for a slot", ["model"],
                             registry=self.registry)
        self.drafted = Gauge("qwen_stream_speculative_draft_tokens", "Tokens drafted and checked (speculative "
                             "decoding), since start", ["model"], registry=self.registry)
        self.accepted = Gauge("qwen_stream_speculative_accepted_tokens", "Drafted tokens the model agreed with, "
                              "since start", ["model"], registry=self.registry)
        self.acceptance = Gauge("qwen_stream_speculative_acceptance_rate", "Accepted / drafted tokens since start "
                                "(0 before any draft)", ["model"], registry=self.registry)

    def track_engine(self, stats: Callable[[], Any]) -> None:
        """Read the running/waiting gauges from ``stats()`` (an object with ``running``/``waiting``) at scrape."""
        self.running.labels(self.model_name).set_function(lambda: float(stats().running))
        self.waiting.labels(self.model_name).set_function(lambda: float(stats().waiting))
        self.drafted.labels(self.model_name).set_function(lambda: float(getattr(stats(), "drafted_tokens", 0)))
        self.accepted.labels(self.model_name).set_function(
            lambda: float(getattr(stats(), "accepted_draft_tokens", 0)))
        self.acceptance.labels(self.model_name).set_function(
            lambda: float(getattr(stats(), "draft_acceptance", None) or 0.0))

    def untrack_engine(self) -> None:
        """The model was unloaded: drop its engine gauges (they would keep its engine alive, and lie)."""
        for gauge in (self.running, self.waiting, self.drafted, self.accepted, self.acceptance):
            with contextlib.suppress(KeyError):
                gauge.remove(self.model_name)

    def for_model(self, model_name: str) -> ServerMetrics:
        """The same series (one registry, one page), labelled with another model: one view per served model."""
        view = copy.copy(self)
        view.model_name = model_name
        return view

    def observe_pooled(self, route: str, inputs: int, tokens: int) -> None:
        """An embedding or ranking request served: its texts (engine requests) and their prompt tokens."""
        self.embedding_inputs.labels(self.model_name, route).inc(inputs)
        self.embedding_tokens.labels(self.model_name, route).inc(tokens)

    def tracker(self, route: str) -> RequestTracker:
        return RequestTracker(self, route)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class RequestTracker:
    """Turns one request's stream events into observations (one tracker per engine request)."""

    def __init__(self, metrics: ServerMetrics, route: str) -> None:
        self._m = metrics
        self._labels = (metrics.model_name, route)
        self._tokens = 0
        self._last_elapsed: float | None = None
        self._finished = False

    def observe(self, event: StreamEvent) -> None:
        new_tokens = event.num_generated_tokens - self._tokens
        if new_tokens > 0:
            self._observe_tokens(event, new_tokens)
        if event.finish_reason is not None and not self._finished:
            self._finished = True
            self._m.e2e.labels(*self._labels).observe(event.elapsed_s)
            self._m.prompt_tokens.labels(*self._labels).inc(event.num_prompt_tokens)
            self._m.requests.labels(*self._labels, event.finish_reason.value).inc()

    def close(self) -> None:
        """The request ended without a finish event (the client went away): count it as aborted."""
        if not self._finished:
            self._finished = True
            self._m.requests.labels(*self._labels, "abort").inc()

    def _observe_tokens(self, event: StreamEvent, new_tokens: int) -> None:
        if self._last_elapsed is None:
            ttft = event.time_to_first_token_s if event.time_to_first_token_s is not None else event.elapsed_s
            self._m.ttft.labels(*self._labels).observe(ttft)
        else:
            # Several tokens in one event (a consumer that lagged): spread the gap evenly over them.
            gap = max(event.elapsed_s - self._last_elapsed, 0.0) / new_tokens
            for _ in range(new_tokens):
                self._m.itl.labels(*self._labels).observe(gap)
        self._m.generation_tokens.labels(*self._labels).inc(new_tokens)
        self._tokens = event.num_generated_tokens
        self._last_elapsed = event.elapsed_s
