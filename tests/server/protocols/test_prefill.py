"""A final assistant message is the start of the answer (prefill) on every chat protocol: the prompt is the
template's own, left open after that message, and the answer carries only the new text. Shown on the tiny model by
equality at temperature 0: each protocol's answer is exactly what /v1/completions writes after the prompt
/apply-template shows. With Qwen2.5-Coder, an Anthropic JSON prefill continues into valid JSON (slow)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from qwen_stream.server.app import create_app
from tests.support.live_server import LiveServer

PREFILL = '{"name": "'
MESSAGES = [{"role": "user", "content": "Give a famous scientist as JSON with name and field."},
            {"role": "assistant", "content": PREFILL}]
GREEDY = {"temperature": 0}


@pytest.fixture(scope="module")
def continued(http_module: httpx.Client) -> str:
    """What the model writes after the open prompt, as raw text: every protocol's prefill answer must be it."""
    prompt = http_module.post("/apply-template", json={"messages": MESSAGES}).json()["prompt"]
    assert prompt.endswith("<|im_start|>assistant\n" + PREFILL)  # Qwen2.5's template, left open after the prefill
    answer = http_module.post("/v1/completions", json={"prompt": prompt, "max_tokens": 12, **GREEDY}).json()
    return str(answer["choices"][0]["text"])


@pytest.fixture(scope="module")
def http_module(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=60) as http:
        yield http


def test_openai_chat_continues_the_final_assistant_message(client: Any, continued: str) -> None:
    args = {"model": "m", "messages": MESSAGES, "max_tokens": 12, **GREEDY}
    whole = client.chat.completions.create(**args)
    streamed = "".join(c.choices[0].delta.content or "" for c in client.chat.completions.create(stream=True, **args)
                       if c.choices)
    assert whole.choices[0].message.content == streamed == continued


def test_anthropic_ollama_and_responses_continue_it_too(server: LiveServer, continued: str) -> None:
    message = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0).messages.create(
        model="m", max_tokens=12, messages=MESSAGES, extra_body=GREEDY)  # newer clients: sampling fields so
    assert message.content[0].text == continued  # type: ignore[union-attr]
    reply = ollama.Client(host=server.url, timeout=60).chat(model="m", messages=MESSAGES,
                                                            options={"num_predict": 12, **GREEDY})
    assert reply.message.content == continued
    response = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0).responses.create(
        model="m", input=MESSAGES, max_output_tokens=12, **GREEDY)
    assert response.output_text == continued


def test_vllm_fields_choose_a_new_turn_or_a_bare_prompt(http_module: httpx.Client, tiny_chat_model: Any) -> None:
    def prompt(**fields: Any) -> str:
        return str(http_module.post("/apply-template", json={"messages": MESSAGES, **fields}).json()["prompt"])

    assert prompt(continue_final_message=True) == prompt()
    new_turn = prompt(add_generation_prompt=True)
    assert new_turn.endswith(PREFILL + "<|im_end|>\n<|im_start|>assistant\n") == new_turn.endswith("assistant\n")
    assert prompt(continue_final_message=False, add_generation_prompt=False).endswith(PREFILL + "<|im_end|>\n")
    body = {"model": "m", "messages": MESSAGES, "max_tokens": 2, "add_generation_prompt": True}
    chat = http_module.post("/v1/chat/completions", json=body).json()
    assert chat["usage"]["prompt_tokens"] == len(tiny_chat_model.tokenizer.encode(new_turn))


@pytest.mark.parametrize(("messages", "fields", "mentions"), [
    (MESSAGES, {"continue_final_message": True, "add_generation_prompt": True}, "cannot both be true"),
    (MESSAGES[:1], {"continue_final_message": True}, "needs the last message to be the assistant's"),
    ([*MESSAGES[:1], {"role": "assistant", "content": ""}], {}, "no text has nothing to continue"),
    ([{"role": "assistant", "content": PREFILL}], {}, "nothing to answer"),
])
def test_what_cannot_be_continued_is_a_400(http_module: httpx.Client, messages: list[dict[str, Any]],
                                          fields: dict[str, Any], mentions: str) -> None:
    refused = http_module.post("/v1/chat/completions", json={"messages": messages, "max_tokens": 2, **fields})
    assert refused.status_code == 400 and mentions in refused.json()["error"]["message"], refused.text


@pytest.mark.slow
def test_an_anthropic_json_prefill_continues_into_valid_json() -> None:
    from qwen_stream.api import ChatModel

    with ChatModel.load("qwen2.5-coder-0.5b", max_batch_size=2, context_length=1024, progress=False) as model, \
            LiveServer(create_app(model, served_model_name="coder")) as live:
        client = anthropic.Anthropic(base_url=live.url, api_key="x", max_retries=0, timeout=300)
        messages = [{"role": "user", "content": "Give the name and birth year of a famous physicist as a JSON "
                                                "object with keys name and year."},
                    {"role": "assistant", "content": PREFILL}]
        message = client.messages.create(model="coder", max_tokens=40, messages=messages, extra_body=GREEDY)
        text = message.content[0].text  # type: ignore[union-attr]
        assert not text.startswith(PREFILL)  # only the new text comes back
        value, _ = json.JSONDecoder().raw_decode(PREFILL + text)
        assert isinstance(value["name"], str) and value["name"] and isinstance(value["year"], int)
        with client.messages.stream(model="coder", max_tokens=40, messages=messages, extra_body=GREEDY) as stream:
            assert "".join(stream.text_stream) == text
