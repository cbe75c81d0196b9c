"""response_format on a live server (tiny random qwen2): the official openai client and LangChain's
with_structured_output get JSON that validates; a schema the grammar library rejects is a 400."""

from __future__ import annotations

import json
from typing import Any, Literal

import httpx
import jsonschema
import pytest
from pydantic import BaseModel, Field

from tests.support.live_server import LiveServer

SCHEMA = {"type": "object", "properties": {"answer": {"enum": ["yes", "no"]},
                                           "score": {"type": "integer", "minimum": 0, "maximum": 9}},
          "required": ["answer", "score"], "additionalProperties": False}
JSON_SCHEMA_FORMAT = {"type": "json_schema", "json_schema": {"name": "verdict", "schema": SCHEMA, "strict": True}}
MESSAGES = [{"role": "user", "content": "Is the sky blue? Answer in JSON."}]


def test_json_schema_streamed_and_whole_are_the_same_valid_json(client: Any) -> None:
    args: dict[str, Any] = {"model": "m", "messages": MESSAGES, "max_tokens": 60, "temperature": 0.9, "seed": 7,
                            "response_format": JSON_SCHEMA_FORMAT}
    whole = client.chat.completions.create(**args).choices[0]
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **args)
                       if c.choices)
    assert whole.message.content == streamed and whole.finish_reason == "stop"
    jsonschema.validate(json.loads(streamed), SCHEMA)


def test_json_object_and_text_formats(client: Any) -> None:
    reply = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=4, temperature=0,
                                           response_format={"type": "json_object"})
    assert reply.choices[0].message.content.startswith("{")
    plain = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=4, temperature=0,
                                           response_format={"type": "text"})
    free = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=4, temperature=0)
    assert plain.choices[0].message.content == free.choices[0].message.content


def test_completions_take_a_response_format_too(client: Any) -> None:
    reply = client.completions.create(model="m", prompt="Verdict:", max_tokens=60, temperature=0,
                                      extra_body={"response_format": JSON_SCHEMA_FORMAT})
    jsonschema.validate(json.loads(reply.choices[0].text), SCHEMA)


@pytest.mark.parametrize(("response_format", "mentions"), [
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "nonsense"}}}, 'Unsupported type'),
    ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "pattern": "(("}}},
     "parenthesis"),
    ({"type": "json_schema", "json_schema": {"name": "x"}}, "json_schema"),
    ({"type": "yaml"}, "response_format"),
    ("json", "response_format"),
])
def test_a_schema_the_library_rejects_is_400_and_the_server_still_serves(
        http: httpx.Client, response_format: Any, mentions: str) -> None:
    body = {"model": "m", "messages": MESSAGES, "max_tokens": 3, "response_format": response_format}
    for stream in (False, True):
        bad = http.post("/v1/chat/completions", json={**body, "stream": stream})
        assert bad.status_code == 400, bad.text
        assert mentions in bad.json()["error"]["message"]
    body.pop("response_format")
    assert http.post("/v1/chat/completions", json=body).status_code == 200


class Verdict(BaseModel):
    answer: Literal["yes", "no"]
    score: int = Field(ge=0, le=9)


def test_langchain_with_structured_output_uses_json_schema(server: LiveServer) -> None:
    from langchain_openai import ChatOpenAI

    sent: list[dict[str, Any]] = []
    spy = httpx.Client(event_hooks={"request": [lambda request: sent.append(json.loads(request.read()))]})
    llm = ChatOpenAI(model="m", base_url=f"{server.url}/v1", api_key="unused", temperature=0.8, max_tokens=60,
                     max_retries=0, timeout=60, http_client=spy)
    structured = llm.with_structured_output(Verdict, include_raw=True)  # LangChain's default method
    for seed in range(3):
        result = structured.invoke(MESSAGES, seed=seed)
        assert result["parsing_error"] is None
        assert isinstance(result["parsed"], Verdict)
        assert result["raw"].response_metadata["finish_reason"] == "stop"
    assert [body["response_format"]["type"] for body in sent] == ["json_schema"] * 3  # the grammar path, no tools
    assert "tools" not in sent[0]


def test_logprobs_of_a_constrained_answer_are_finite(client: Any) -> None:
    reply = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=60, temperature=0, logprobs=True,
                                           top_logprobs=5, response_format=JSON_SCHEMA_FORMAT).choices[0]
    jsonschema.validate(json.loads(reply.message.content), SCHEMA)
    entries = reply.logprobs.content
    assert "".join(e.token for e in entries) == reply.message.content
    for entry in entries:  # over the tokens the grammar allowed: the forbidden ones (-inf) are left out
        assert 1 <= len(entry.top_logprobs) <= 5
        assert all(-1e9 < alt.logprob <= 0 for alt in entry.top_logprobs) and -1e9 < entry.logprob <= 0
