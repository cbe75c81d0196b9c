"""``POST /infill``, llama.cpp's fill-in-the-middle route for editors, over the one engine.

The request goes through the same admission as every protocol (``start_job``: limits, 429, metrics); the answer
ends where the model ends the middle (end of text, a FIM token), at ``n_predict``, at a stop string, where a
grammar ends it, or where the editor's rules end it (``n_indent``, ``t_max_predict_ms``). Successive keystrokes
send prompts that share all but their end, which the engine's prefix reuse serves from the slot's cache
(``timings.cache_n`` says how many tokens were). The answer's shape is llama.cpp's (protocols/llamacpp/run.py), and
so are its errors.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from qwen_stream.server.auth import api_key_dependency
from qwen_stream.server.pipeline.admission import respond_json
from qwen_stream.server.pipeline.bodies import openapi_body, parse_body_and
from qwen_stream.server.pipeline.job import ChatJob, start_job
from qwen_stream.server.protocols.infill.protocol import InfillRequest
from qwen_stream.server.protocols.llamacpp.errors import LlamaRoute
from qwen_stream.server.protocols.llamacpp.run import LlamaRun, stream, whole
from qwen_stream.server.wire.sse import SSEResponse

if TYPE_CHECKING:
    from qwen_stream.server.state import ServerState

ROUTE = "/infill"


def infill_router(state: ServerState) -> APIRouter:
    router = APIRouter(route_class=LlamaRoute, dependencies=[Depends(api_key_dependency(state.api_keys))])

    @router.post(ROUTE, openapi_extra=openapi_body(InfillRequest), responses={200: {"content": {"text/event-stream": {}}}})
    async def infill(request: Request) -> Response:
        body, job = await parse_body_and(request, InfillRequest, _infill_job)
        started = await start_job(state, job, ROUTE)
        info = started.requests[0].info
        run = LlamaRun(started.gen, body, started.model_name, info.num_tokens, started.strings,
                       truncated=info.truncated)
        if body.stream:
            return SSEResponse(stream(run))
        return await respond_json(request, whole(run))

    return router


def _infill_job(body: InfillRequest) -> ChatJob:
    return ChatJob([], body.sampling(), model=body.model, fim=[body.fim_input()])
