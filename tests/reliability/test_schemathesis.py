"""Schemathesis fuzzes every operation of the live server's OpenAPI document: no 5xx, and every answer conforms
to the documented schema, status codes and content types. Bounded (examples per operation, answer length) so it
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
from server_harness import LiveServer

from qwen_stream.server.app import create_app

SERVED = "tiny-qwen"  # the served name (tests/reliability/conftest.py)
EXAMPLES = 40  # per operation
CHECKS = [not_a_server_error, response_schema_conformance, status_code_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def fuzz_server(tiny_chat_model: Any) -> Iterator[LiveServer]:
    # Answers of at most 8 tokens when max_tokens is absent keep each fuzzed request cheap.
    with LiveServer(create_app(tiny_chat_model, served_model_name=SERVED, max_tokens_cap=8)) as live:
        yield live


def test_fuzzed_requests_never_get_a_server_error(fuzz_server: LiveServer) -> None:
    api = schemathesis.openapi.from_url(f"{fuzz_server.url}/openapi.json")
    # the OpenAI routes and the service routes; the other protocols' routes answer in their own error shapes
    operations = [op for op in (result.ok() for result in api.get_all_operations())
                  if op.path.startswith(("/v1/chat/", "/v1/completions", "/v1/models", "/health", "/metrics"))]
    statuses: list[int] = []
    assert {op.label for op in operations} >= {"POST /v1/chat/completions", "POST /v1/completions", "GET /health"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def fuzz(case: Any) -> None:
            if isinstance(case.body, dict) and isinstance(case.body.get("max_tokens"), int):
                case.body["max_tokens"] = min(case.body["max_tokens"], 8)  # valid lengths, cheap answers
            statuses.append(case.call_and_validate(base_url=fuzz_server.url, checks=CHECKS, timeout=60).status_code)

        fuzz()
    assert len(statuses) >= 3 * EXAMPLES and max(statuses) < 500
    assert {200, 400} <= set(statuses)  # valid requests were answered and invalid ones refused
