"""The routes every server answers whatever it serves: ``GET /health`` (the truth about serving) and ``GET /metrics``
(Prometheus)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from qwen_stream.server.health import HealthResponse, health
from qwen_stream.server.metrics import CONTENT_TYPE
from qwen_stream.server.state import ServerState


def service_router(state: ServerState) -> APIRouter:
    router = APIRouter()

    @router.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
    async def health_route() -> JSONResponse:
        body = health(state)
        return JSONResponse(body.model_dump(exclude_none=True), status_code=200 if body.status == "ok" else 503)

    @router.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    return router
