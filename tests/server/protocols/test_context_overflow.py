"""A conversation longer than the window, answered as each protocol's own server answers it (the tiny model, a
512-token window): OpenAI and Anthropic a 400 with the window and the prompt's size, Responses per ``truncation``,
llama.cpp ``exceed_context_size_error`` with ``n_ctx`` and ``n_prompt_tokens``, Ollama folding the oldest turns
and saying so truthfully; the Python API folds unless asked for the error."""

from __future__ import annotations

import logging
from typing import Any

import anthropic
import httpx
import ollama
import openai
import pytest

from qwen_stream.errors import ContextLengthError
from qwen_stream.inputs.answer_length import NO_FOLDING
from tests.support.live_server import LiveServer

WINDOW = 512
LONG = [m for i in range(40) for m in ({"role": "user", "content": f"Question {i}: tell me about the number {i}."},
                                       {"role": "assistant", "content": f"The number {i} is a fine number."})]
LONG = [*LONG, {"role": "user", "content": "And the last one?"}]


@pytest.fixture(scope="module")
def whole_size(tiny_chat_model: Any) -> int:
    """The conversation's prompt, whole: what every refusal must report."""
    size = tiny_chat_model.inputs.chat_prompt(LONG).num_tokens
    assert size > WINDOW == tiny_chat_model.context_length
    return int(size)


def test_openai_chat_is_a_400_with_the_window_and_the_prompts_size(client: Any, whole_size: int) -> None:
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as refused:
            client.chat.completions.create(model="m", messages=LONG, max_tokens=8, stream=stream)
        error = refused.value.body
        assert error["code"] == "context_length_exceeded" and error["type"] == "invalid_request_error"
        assert (error["n_ctx"], error["n_prompt_tokens"]) == (WINDOW, whole_size)
        assert f"prompt is too long: {whole_size} tokens > {WINDOW - 8} maximum" in error["message"]


def test_openai_chat_that_fits_without_max_tokens_gets_the_rest_of_the_window(client: Any) -> None:
    short = LONG[-25:]  # fits the window, not with a long answer besides
    answer = client.chat.completions.create(model="m", messages=short, temperature=0, extra_body={"ignore_eos": True})
    assert answer.usage.prompt_tokens + answer.usage.completion_tokens == WINDOW
    with pytest.raises(openai.BadRequestError, match="prompt is too long"):
        client.chat.completions.create(model="m", messages=short, max_tokens=WINDOW - 50)


def test_openai_completions_refuse_a_prompt_over_the_window(client: Any) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.completions.create(model="m", prompt="word " * 600, max_tokens=4)
    assert refused.value.body["code"] == "context_length_exceeded" and refused.value.body["n_ctx"] == WINDOW


def test_anthropic_is_a_400_in_its_own_words(server: LiveServer, whole_size: int) -> None:
    client = anthropic.Anthropic(base_url=server.url, api_key="x", max_retries=0)
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model="m", max_tokens=8, messages=LONG)
    error = refused.value.body["error"]  # type: ignore[index]
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith(f"prompt is too long: {whole_size} tokens > {WINDOW - 8} maximum")


def test_responses_follow_their_truncation_field(client: Any, whole_size: int) -> None:
    items = [{"role": m["role"], "content": m["content"]} for m in LONG]
    with pytest.raises(openai.BadRequestError, match="prompt is too long"):
        client.responses.create(model="m", input=items, max_output_tokens=8)  # "disabled", the default
    folded = client.responses.create(model="m", input=items, max_output_tokens=8, truncation="auto")
    assert folded.status in ("completed", "incomplete") and folded.truncation == "auto"
    assert folded.usage.input_tokens <= WINDOW - 8 < whole_size  # the oldest items went


def test_llama_cpp_routes_answer_exceed_context_size_error(http: httpx.Client, tiny_chat_model: Any) -> None:
    prompt = "word " * 600
    size = len(tiny_chat_model.tokenizer.encode(prompt, add_special_tokens=False))
    refused = http.post("/completion", json={"prompt": prompt, "n_predict": 4})
    assert refused.status_code == 400
    assert refused.json() == {"error": {"code": 400, "type": "exceed_context_size_error", "n_ctx": WINDOW,
                                        "n_prompt_tokens": size, "message": refused.json()["error"]["message"]}}
    assert f"{size} tokens" in refused.json()["error"]["message"]


def test_ollama_folds_and_says_so_truthfully(server: LiveServer, tiny_chat_model: Any, whole_size: int,
                                             caplog: pytest.LogCaptureFixture) -> None:
    client = ollama.Client(host=server.url, timeout=60)
    with caplog.at_level(logging.WARNING, logger="qwen_stream.server"):
        reply = client.chat(model="m", messages=LONG, options={"num_predict": 8, "temperature": 0})
    read = tiny_chat_model.inputs.chat(LONG, max_new_tokens=8)[0]  # the Python API folds the same way
    assert read.info.dropped_turns > 0
    assert reply.prompt_eval_count == read.info.num_tokens < whole_size  # what the model read, not what was sent
    assert any(f"the {read.info.dropped_turns} oldest turns of a conversation were dropped" in r.getMessage()
               for r in caplog.records)


def test_the_python_api_folds_unless_asked_for_the_error(tiny_chat_model: Any, whole_size: int) -> None:
    event = tiny_chat_model.stream(messages=LONG, max_new_tokens=4, temperature=0).collect()
    assert 0 < event.num_prompt_tokens <= WINDOW - 4
    with pytest.raises(ContextLengthError) as refused:
        tiny_chat_model.stream(messages=LONG, max_new_tokens=4, policy=NO_FOLDING)
    assert (refused.value.window, refused.value.prompt_tokens) == (WINDOW, whole_size)
