"""Output formats on every route that carries one, through each protocol's own client on a live server (the tiny
random model: whatever it would write, the grammar decides what it can): GBNF, regex, choice, JSON schema in
OpenAI's, llama-server's and vLLM's fields, Anthropic's output_format, Ollama's format and llama.cpp's /completion;
streamed equals whole; what does not compile is a 400 naming the field and quoting the compiler."""

from __future__ import annotations

import json
import re
from typing import Any

import anthropic
import httpx
import ollama
import pytest

from tests.support.live_server import LiveServer

YES_NO = 'root ::= "yes" | "no"'
ASK = [{"role": "user", "content": "Is the sky blue?"}]
PHONE = r"\(\d{3}\) \d{3}-\d{4}"
CHOICES = ["red", "green", "blue"]


def chat(client: Any, **fields: Any) -> tuple[str, str]:
    """The whole answer and the streamed one (the same seed), as the openai client returns them."""
    args = {"model": "m", "messages": ASK, "max_tokens": 40, "temperature": 1.0, "seed": 3, **fields}
    extra = args.pop("extra_body", {})
    whole = client.chat.completions.create(**args, extra_body=extra).choices[0].message.content
    chunks = client.chat.completions.create(**args, extra_body=extra, stream=True)
    return whole, "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_gbnf_on_chat_completions_is_always_one_of_its_words_streamed_and_whole(client: Any) -> None:
    for seed in range(20):
        whole, streamed = chat(client, seed=seed, extra_body={"grammar": YES_NO})
        assert whole == streamed and whole in ("yes", "no")


def test_gbnf_on_completions_streamed_and_whole(client: Any) -> None:
    for seed in range(5):
        args = {"model": "m", "prompt": "Answer:", "max_tokens": 10, "temperature": 1.0, "seed": seed,
                "extra_body": {"grammar": YES_NO}}
        whole = client.completions.create(**args).choices[0].text
        streamed = "".join(c.choices[0].text for c in client.completions.create(stream=True, **args) if c.choices)
        assert whole == streamed and whole in ("yes", "no")


def test_vllm_regex_and_choice_hold_over_20_seeds(client: Any) -> None:
    for seed in range(20):
        regex, _ = chat(client, seed=seed, extra_body={"structured_outputs": {"regex": PHONE}})
        assert re.fullmatch(PHONE, regex), regex
        choice, _ = chat(client, seed=seed, extra_body={"structured_outputs": {"choice": CHOICES}})
        assert choice in CHOICES


def test_vllm_older_guided_fields_and_top_level_json_schema(client: Any) -> None:
    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"],
              "additionalProperties": False}
    assert chat(client, extra_body={"guided_choice": CHOICES})[0] in CHOICES
    assert re.fullmatch(PHONE, chat(client, extra_body={"guided_regex": PHONE})[0])
    assert chat(client, extra_body={"guided_grammar": YES_NO})[0] in ("yes", "no")
    for fields in ({"guided_json": schema}, {"json_schema": schema}, {"structured_outputs": {"json": schema}},
                   {"response_format": {"type": "json_object", "schema": schema}}):  # the last: llama-server's
        whole, streamed = chat(client, max_tokens=30, extra_body=fields)
        assert whole == streamed and isinstance(json.loads(whole)["n"], int), fields


def test_a_grammar_that_does_not_compile_is_a_400_quoting_the_compiler(http: httpx.Client) -> None:
    for route, body in (("/v1/chat/completions", {"messages": ASK}), ("/v1/completions", {"prompt": "x"})):
        for stream in (False, True):
            bad = http.post(route, json={**body, "grammar": "root ::= undefined_rule", "stream": stream})
            assert bad.status_code == 400, bad.text
            error = bad.json()["error"]
            assert error["param"] == "grammar"
            assert error["message"] == ('cannot compile the grammar (grammar): EBNF parser error at line 1, '
                                        'column 10: Rule "undefined_rule" is not defined')
    bad = http.post("/v1/chat/completions", json={"messages": ASK, "structured_outputs": {"regex": "(("}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "structured_outputs.regex"
    ok = http.post("/v1/chat/completions", json={"messages": ASK, "max_tokens": 2})
    assert ok.status_code == 200  # and the server still serves


def test_two_formats_in_one_request_are_a_400_naming_both(http: httpx.Client) -> None:
    body = {"messages": ASK, "grammar": YES_NO, "response_format": {"type": "json_object"}}
    bad = http.post("/v1/chat/completions", json=body)
    assert bad.status_code == 400 and "not both response_format and grammar" in bad.json()["error"]["message"]


def test_llama_cpp_completion_takes_grammar_and_json_schema(http: httpx.Client) -> None:
    for seed in range(5):
        body = {"prompt": "Q: Is it?\nA:", "n_predict": 8, "seed": seed, "grammar": YES_NO}
        assert http.post("/completion", json=body).json()["content"] in ("yes", "no")
    schema = {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}
    answer = http.post("/completion", json={"prompt": "Two numbers:", "n_predict": 40, "json_schema": schema})
    assert len(json.loads(answer.json()["content"])) == 2
    bad = http.post("/completion", json={"prompt": "x", "grammar": 'root ::= "x', "n_predict": 2})
    assert bad.status_code == 400 and "Expect \" in string literal" in bad.json()["error"]["message"]


def test_anthropic_output_format_and_ollama_format(server: LiveServer) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"],
              "additionalProperties": False}
    client = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    message = client.messages.create(model="m", max_tokens=20, messages=ASK, extra_body={
        "output_format": {"type": "json_schema", "schema": schema}})
    assert isinstance(json.loads(message.content[0].text)["ok"], bool)  # type: ignore[union-attr]
    reply = ollama.Client(host=server.url, timeout=60).chat(model="m", messages=ASK, format=schema,
                                                            options={"num_predict": 20})
    assert isinstance(json.loads(reply.message.content or "")["ok"], bool)


@pytest.mark.parametrize("route", ["/v1/messages", "/api/chat"])
def test_an_invalid_schema_is_a_400_in_each_protocols_shape(http: httpx.Client, route: str) -> None:
    schema = {"type": "nonsense"}
    body: dict[str, Any] = {"model": "m", "messages": ASK}
    if route == "/v1/messages":
        body |= {"max_tokens": 5, "output_config": {"format": {"type": "json_schema", "schema": schema}}}
    else:
        body |= {"format": schema, "stream": False}
    bad = http.post(route, json=body)
    assert bad.status_code == 400, bad.text
    message = bad.json()["error"]["message"] if route == "/v1/messages" else bad.json()["error"]
    assert 'Unsupported type "nonsense"' in message


@pytest.mark.slow
def test_infill_honours_a_grammar_on_a_fim_model() -> None:
    """/infill refused grammars before; now the middle is held to one (Qwen2.5-Coder, greedy and sampled)."""
    from qwen_stream.api import ChatModel
    from qwen_stream.server.app import create_app

    middle = re.compile(r"    return [a-z] [+*-] [a-z]")
    grammar = 'root ::= "    return " [a-z] " " [+*-] " " [a-z]'
    gap = {"input_prefix": "def add(a, b):\n", "input_suffix": "\n\nprint(add(1, 2))\n", "n_predict": 24}
    with ChatModel.load("qwen2.5-coder-0.5b", max_batch_size=2, context_length=1024, progress=False) as model, \
            LiveServer(create_app(model, served_model_name="coder")) as live, \
            httpx.Client(base_url=live.url, timeout=300) as http:
        for seed in range(4):
            answer = http.post("/infill", json={**gap, "grammar": grammar, "seed": seed, "temperature": 1.0}).json()
            assert middle.fullmatch(answer["content"]), answer
        streamed = http.post("/infill", json={**gap, "grammar": grammar, "temperature": 0, "stream": True})
        whole = http.post("/infill", json={**gap, "grammar": grammar, "temperature": 0}).json()
        pieces = [json.loads(line.removeprefix("data: ")) for line in streamed.text.split("\n\n") if line]
        assert "".join(p["content"] for p in pieces) == whole["content"] and middle.fullmatch(whole["content"])
