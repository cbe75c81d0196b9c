"""Schemathesis fuzzes every operation of the live server's OpenAPI document: no 5xx, and every answer conforms
to the documented schema, status codes and content types, on every protocol's routes (OpenAI, Responses,
Anthropic, Ollama: each declares its own error shape). Bounded (examples per operation, answer length) so it
costs CI about a minute."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from qwen_stream.server.app import create_app
from tests.support.live_server import LiveServer

SERVED = "tiny-qwen"  # the served name (tests/conftest.py)
EXAMPLES = {"all": 40, "fast": 12}  # per operation: `pytest --all` (CI) fuzzes each route 40 times, the fast tier 12
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def fuzz_server(tiny_chat_model: Any) -> Iterator[LiveServer]:
    # Answers of at most 8 tokens when max_tokens is absent keep each fuzzed request cheap.
    with LiveServer(create_app(tiny_chat_model, served_model_name=SERVED, max_tokens_cap=8)) as live:
        yield live


def test_fuzzed_requests_never_get_a_server_error(fuzz_server: LiveServer, pytestconfig: pytest.Config) -> None:
    examples = EXAMPLES["all" if pytestconfig.getoption("run_all") else "fast"]
    api = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    # every protocol's routes (each declares its own error shape) and the service routes
    operations = [op for op in (result.ok() for result in api.get_all_operations())
                  if op.path.startswith(("/v1/", "/api/", "/health", "/metrics"))]
    statuses: list[int] = []
    assert {op.label for op in operations} >= {"POST /v1/chat/completions", "POST /v1/completions", "GET /health",
                                               "POST /v1/responses", "POST /v1/messages", "POST /api/chat",
                                               "POST /api/generate"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            cheap_lengths(case.body)
            statuses.append(case.call_and_validate(base_url=fuzz_server.url, checks=CHECKS, timeout=60).status_code)

        fuzz()
    assert len(statuses) >= 10 * examples and max(statuses) < 500
    assert {200, 400} <= set(statuses)  # valid requests were answered and invalid ones refused


def cheap_lengths(body: Any) -> None:
    """Answer lengths kept valid and cheap, whatever each protocol calls them; a fuzzed model name is mostly the
    served one, so bodies get past the 404 (unknown names are the hostile table's) into generation."""
    if not isinstance(body, dict):
        return
    if isinstance(body.get("model"), str) and len(body["model"]) % 4:
        body["model"] = SERVED
    for name in ("max_tokens", "max_output_tokens", "max_completion_tokens"):
        if isinstance(body.get(name), int):
            body[name] = min(body[name], 8)
    options = body.get("options")
    if isinstance(options, dict) and isinstance(options.get("num_predict"), int):
        options["num_predict"] = min(options["num_predict"], 8)
