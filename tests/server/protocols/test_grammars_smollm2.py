"""Grammars with a real small model (SmolLM2-135M) on both runners, through the openai client on a live server: a
GBNF yes/no is always yes or no, streamed and whole; a regex and a choice hold over 20 seeds; llama.cpp's
/completion takes the same GBNF."""

from __future__ import annotations

import importlib.util
import re
from typing import Any

import httpx
import openai
import pytest

from qwen_stream.server.app import create_app
from tests.support.live_server import LiveServer

pytestmark = pytest.mark.slow

RUNNERS = ["torch", pytest.param("llamacpp", marks=pytest.mark.skipif(
    importlib.util.find_spec("llama_cpp") is None, reason="llama-cpp-python is not installed"))]
ASK = [{"role": "user", "content": "Is water wet? Answer yes or no."}]
DATE = r"20[0-9]{2}-(0[1-9]|1[0-2])-[0-2][0-9]"
CHOICES = ["Paris", "London", "Berlin", "Madrid"]


@pytest.mark.parametrize("runner", RUNNERS)
def test_grammars_hold_on_a_real_model(runner: str) -> None:
    from qwen_stream.api import ChatModel

    with ChatModel.load("smollm2-135m", runner=runner, max_batch_size=4, context_length=1024,
                        progress=False) as model, LiveServer(create_app(model, served_model_name="m")) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="x", max_retries=0, timeout=120)
        for seed in range(20):
            args: dict[str, Any] = {"model": "m", "messages": ASK, "max_tokens": 16, "temperature": 1.0, "seed": seed}
            if seed < 5:  # streamed equals whole, as a client sees both
                whole = client.chat.completions.create(**args, extra_body={"grammar": 'root ::= "yes" | "no"'})
                chunks = client.chat.completions.create(**args, stream=True,
                                                        extra_body={"grammar": 'root ::= "yes" | "no"'})
                streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
                assert whole.choices[0].message.content == streamed in ("yes", "no")
            when = client.chat.completions.create(
                **{**args, "messages": [{"role": "user", "content": "When did it happen?"}]},
                extra_body={"structured_outputs": {"regex": DATE}}).choices[0].message.content
            assert re.fullmatch(DATE, when or ""), when
            city = client.chat.completions.create(
                **{**args, "messages": [{"role": "user", "content": "The capital of France?"}]},
                extra_body={"guided_choice": CHOICES}).choices[0].message.content
            assert city in CHOICES
        answer = httpx.post(f"{live.url}/completion", timeout=120, json={
            "prompt": "Q: Is water wet?\nA:", "n_predict": 8, "grammar": 'root ::= " yes" | " no"'}).json()
        assert answer["content"] in (" yes", " no") and answer["stop_type"] == "eos"
