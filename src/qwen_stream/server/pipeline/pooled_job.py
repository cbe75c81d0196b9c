"""The one way an embedding or ranking request reaches the engine, for every protocol's route.

As ``start_job`` is for answers: resolve the model the request names (404, 503 while loading or draining), let its
input processor make the pooled job off the event loop (tokenizing thousands of texts; bad input a 400 naming the
field, a model that cannot do it a 400 saying so), run it through its engine client beside every stream (429 when
the engine's queue stays full, 503 when the engine is down), and count its inputs and tokens in /metrics. A client
that disconnects first gets its requests aborted. Routes only translate their body in and the vectors out.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from starlette.requests import Request

from qwen_stream.client.vectors import Embeddings, Ranking
from qwen_stream.inputs.pooled_request import EmbeddingJob, RankingJob
from qwen_stream.inputs.processor import InputProcessor
from qwen_stream.server.pipeline.admission import CLIENT_CLOSED, prepare_off_loop
from qwen_stream.server.pipeline.generation import ClientDisconnected, run_until_disconnect
from qwen_stream.server.wire.errors import APIError
from qwen_stream.server.wire.refusals import refusal

if TYPE_CHECKING:
    from qwen_stream.server.state import ServerState

Job = EmbeddingJob | RankingJob
R = TypeVar("R", Embeddings, Ranking)


@dataclass(slots=True)
class PooledAnswer(Generic[R]):
    result: R
    model_name: str  # the served name answers carry
    elapsed_s: float  # from the model resolved to the last vector (Ollama's total_duration)


async def run_embeddings(state: ServerState, request: Request, route: str, model: str | None,
                         build: Callable[[InputProcessor], EmbeddingJob],
                         keep_alive_s: float | None = None) -> PooledAnswer[Embeddings]:
    """Embed what ``build`` makes of the request with the model it names."""
    result, name, elapsed = await _run(state, request, route, model, build,
                                       lambda client, job: client.aembed(job), keep_alive_s)
    if not isinstance(result, Embeddings):
        raise TypeError("an embedding job gave no embeddings")
    return PooledAnswer(result, name, elapsed)


async def run_ranking(state: ServerState, request: Request, route: str, model: str | None,
                      build: Callable[[InputProcessor], RankingJob]) -> PooledAnswer[Ranking]:
    """Score what ``build`` makes of the request (documents for a query, or pairs) with the model it names."""
    result, name, elapsed = await _run(state, request, route, model, build, lambda client, job: client.arank(job),
                                       None)
    if not isinstance(result, Ranking):
        raise TypeError("a ranking job gave no ranking")
    return PooledAnswer(result, name, elapsed)


async def _run(state: ServerState, request: Request, route: str, model: str | None,
               build: Callable[[InputProcessor], Job], run: Callable[[Any, Any], Awaitable[Embeddings | Ranking]],
               keep_alive_s: float | None) -> tuple[Embeddings | Ranking, str, float]:
    served = await state.resolve(model, keep_alive_s)
    started = time.perf_counter()
    job = await prepare_off_loop(lambda: build(served.model.inputs))
    try:
        result = await run_until_disconnect(request, run(served.model.client, job))
    except ClientDisconnected:
        raise APIError(CLIENT_CLOSED, "the client closed the request", "invalid_request_error") from None
    except Exception as exc:
        answer = refusal(exc)  # a refusal at submit (429, 503, 400); anything else is a bug: a 500
        if answer is None:
            raise
        raise answer from exc
    requests = job.requests
    state.metrics_for(served.name).observe_pooled(route, len(requests), sum(r.info.num_tokens for r in requests))
    return result, served.name, time.perf_counter() - started
