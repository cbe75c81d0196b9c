"""Fill-in-the-middle on a model without FIM tokens (the tiny model has the Qwen-7B tokenizer): every protocol
answers 400 saying so, in its own shape, and nothing is left running; bad /infill bodies are 400s too."""

from __future__ import annotations

from typing import Any

import httpx
import ollama
import openai
import pytest

from tests.support.live_server import LiveServer, wait_until_idle

LLAMA_VSCODE_BODY = {"input_prefix": "def add(a, b):\n", "input_suffix": "\n", "input_extra": [], "prompt": "    ",
                     "n_predict": 16, "top_k": 40, "top_p": 0.99, "stream": False,
                     "samplers": ["top_k", "top_p", "infill"], "cache_prompt": True, "n_indent": 4,
                     "t_max_prompt_ms": 500, "t_max_predict_ms": 1000}
NO_FIM = "cannot fill in the middle: its tokenizer has no <|fim_prefix|>"


def test_infill_on_a_model_without_fim_tokens_is_a_400_that_says_so(http: httpx.Client,
                                                                     tiny_chat_model: Any) -> None:
    response = http.post("/infill", json=LLAMA_VSCODE_BODY)
    assert response.status_code == 400, response.text
    assert NO_FIM in response.json()["error"]["message"]
    assert wait_until_idle(tiny_chat_model)


def test_ollama_suffix_and_openai_suffix_say_the_same(server: LiveServer) -> None:
    with pytest.raises(ollama.ResponseError) as refused:
        ollama.Client(host=server.url, timeout=60).generate(model="m", prompt="def f():\n", suffix="\n")
    assert refused.value.status_code == 400 and NO_FIM in refused.value.error
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key="x", max_retries=0, timeout=60)
    with pytest.raises(openai.BadRequestError, match="cannot fill in the middle"):
        client.completions.create(model="m", prompt="def f():\n", suffix="\n", max_tokens=8)


def test_show_does_not_offer_fim_for_a_model_without_it(server: LiveServer, tiny_chat_model: Any) -> None:
    shown = ollama.Client(host=server.url, timeout=60).show("m")
    assert ".Suffix" not in (shown.template or "") and "insert" not in (shown.capabilities or [])


@pytest.mark.parametrize(("change", "mentions"), [
    ({"input_prefix": None}, "input_prefix"),
    ({"input_extra": [{"filename": "a.py"}]}, "text"),
    ({"input_extra": "a.py"}, "input_extra"),
    ({"grammar": "root ::= undefined_rule"}, "cannot compile the grammar"),
    ({"lora": [{"id": 0, "scale": 0.5}]}, "lora"),
    ({"samplers": ["top_k", "mirostat"]}, "mirostat"),
    ({"n_indent": -1}, "n_indent"),
    ({"temperature": "hot"}, "temperature"),
])
def test_bad_infill_bodies_are_400s_naming_the_field(http: httpx.Client, change: dict[str, Any],
                                                     mentions: str) -> None:
    body = {k: v for k, v in {**LLAMA_VSCODE_BODY, **change}.items() if v is not None}
    response = http.post("/infill", json=body)
    assert response.status_code == 400, response.text
    assert mentions in response.json()["error"]["message"]


def test_neutral_values_of_unsupported_fields_are_accepted_up_to_the_fim_check(http: httpx.Client) -> None:
    body = {**LLAMA_VSCODE_BODY, "grammar": "", "n_probs": 0, "lora": [], "mirostat": 0}
    response = http.post("/infill", json=body)
    assert response.status_code == 400 and NO_FIM in response.json()["error"]["message"]
