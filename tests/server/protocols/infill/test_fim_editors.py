"""Editors' fill-in-the-middle requests, as they send them, against a live server on the real Qwen2.5-Coder-0.5B:
llama.vscode's ``/infill`` (warm-up, completion with ``input_extra``, ``n_indent``, ``t_max_predict_ms``),
Continue's Ollama call (``generate(..., suffix=...)`` after ``/api/show``), and ``/v1/completions`` with ``suffix``
through the ``openai`` client. The middle must make the file parse."""

from __future__ import annotations

import ast
import json
from collections.abc import Iterator
from typing import Any

import httpx
import ollama
import openai
import pytest

from qwen_stream.server.app import create_app
from tests.support.live_server import LiveServer

pytestmark = pytest.mark.slow

HEAD = 'import math\n\n\ndef circle_area(radius: float) -> float:\n    """The area of a circle of this radius."""\n'
TAIL = "\n\n\nif __name__ == \"__main__\":\n    print(circle_area(2.0))\n"
EXTRA = [{"filename": "geometry/constants.py", "text": "TAU = 6.283185307179586\n"}]
# What llama.vscode sends (src/llama-server.ts, createRequestPayload), with greedy top_k where a test checks text.
VSCODE = {"input_prefix": HEAD, "input_suffix": TAIL, "input_extra": EXTRA, "prompt": "    ", "n_predict": 48,
          "top_k": 40, "top_p": 0.99, "stream": False, "samplers": ["top_k", "top_p", "infill"],
          "cache_prompt": True, "n_indent": 4, "t_max_prompt_ms": 500, "t_max_predict_ms": 5000}
WARM_UP = {"input_prefix": "", "input_suffix": "", "input_extra": EXTRA, "prompt": "", "n_predict": 0,
           "samplers": [], "cache_prompt": True, "t_max_prompt_ms": 500, "t_max_predict_ms": 1}
# Greedy, and ended by the text alone (n_indent, end of text), not by the clock: on a busy machine the time limit
# ends at an earlier newline than on an idle one, and a token limit can end mid-expression.
GREEDY = {**VSCODE, "top_k": 1, "n_predict": 160, "t_max_predict_ms": 0}


@pytest.fixture(scope="module")
def coder_server() -> Iterator[LiveServer]:
    from qwen_stream.api import ChatModel

    # No speculation: llama.cpp computes chunks of 4+ tokens with other kernels than single tokens, so drafted steps
    # can part greedy text from an earlier run's (docs/speculation.md); these tests compare answers across requests.
    model = ChatModel.load("qwen2.5-coder-0.5b", max_batch_size=2, context_length=4096, speculate=False,
                           progress=False)
    try:
        with LiveServer(create_app(model, served_model_name="coder")) as live:
            yield live
    finally:
        model.close()


@pytest.fixture()
def http(coder_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=coder_server.url, timeout=300) as client:
        yield client


def assert_fills(middle: str, head: str = HEAD + "    ") -> None:
    assert middle.strip() and "<|" not in middle, middle
    ast.parse(head + middle + TAIL)  # raises SyntaxError when the middle does not make the file whole


def test_llama_vscode_warm_up_then_completion(http: httpx.Client) -> None:
    warm = http.post("/infill", json=WARM_UP)
    assert warm.status_code == 200, warm.text
    assert warm.json()["content"] == "" and warm.json()["tokens_predicted"] == 0 and warm.json()["stop"] is True
    sampled = http.post("/infill", json=VSCODE).json()  # llama.vscode's own sampling: only the shape is checked
    assert isinstance(sampled["content"], str) and sampled["stop"] is True and sampled["truncated"] is False
    for line in sampled["content"].split("\n")[1:]:  # n_indent: later lines keep the body's indentation
        assert len(line) - len(line.lstrip(" \t")) >= 4 or not line.strip(), sampled["content"]
    answer = http.post("/infill", json={**GREEDY, "prompt": "    return "}).json()  # the cursor after `return `
    assert_fills(answer["content"], HEAD + "    return ")
    assert answer["stop_type"] in ("eos", "limit") and 0 < answer["tokens_predicted"] <= 160
    timings = answer["timings"]
    assert timings["predicted_n"] == answer["tokens_predicted"] and timings["prompt_ms"] > 0
    assert timings["prompt_n"] + timings["cache_n"] == answer["tokens_evaluated"]


def test_keystrokes_reuse_the_cached_prompt(http: httpx.Client) -> None:
    first = http.post("/infill", json={**GREEDY, "prompt": "    r"}).json()
    second = http.post("/infill", json={**GREEDY, "prompt": "    re"}).json()
    evaluated = second["tokens_evaluated"]
    # all but the typed line's end and what follows the cursor comes from the slot's cache
    assert second["timings"]["cache_n"] >= evaluated - 40, second["timings"]
    assert second["timings"]["prompt_n"] < evaluated / 2 and first["tokens_evaluated"] > 40


def test_streamed_infill_equals_whole(http: httpx.Client) -> None:
    whole = http.post("/infill", json=GREEDY).json()
    with http.stream("POST", "/infill", json={**GREEDY, "stream": True}) as response:
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/event-stream")
        chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    assert "".join(c["content"] for c in chunks) == whole["content"]
    assert all(not c["stop"] for c in chunks[:-1]) and chunks[-1]["stop"] and chunks[-1]["content"] == ""
    assert chunks[-1]["tokens_predicted"] == whole["tokens_predicted"]


def test_n_indent_ends_at_the_first_line_outside_the_block(http: httpx.Client) -> None:
    body = {**GREEDY, "input_prefix": "def double(x):\n", "prompt": "    ", "input_suffix": "",
            "n_indent": 4, "n_predict": 64}
    answer = http.post("/infill", json=body).json()
    lines = answer["content"].split("\n")
    assert all(len(line) - len(line.lstrip()) >= 4 for line in lines[1:] if line.strip()), answer["content"]
    ast.parse("def double(x):\n    " + answer["content"])


def test_continue_ollama_fim(coder_server: LiveServer) -> None:
    client = ollama.Client(host=coder_server.url, timeout=300)
    shown = client.show("coder")
    assert ".Suffix" in (shown.template or "") and "insert" in (shown.capabilities or [])
    # Continue's autocomplete options for Qwen2.5-Coder (its stop words include the FIM tokens' text)
    options = {"temperature": 0.01, "num_predict": 48, "stop": ["<|endoftext|>", "<|fim_prefix|>", "<|fim_middle|>",
                                                                 "<|fim_suffix|>", "<|fim_pad|>", "<|repo_name|>",
                                                                 "<|file_sep|>", "<|im_start|>", "<|im_end|>",
                                                                 "\n\n\n"]}
    parts = list(client.generate(model="coder", prompt=HEAD + "    ", suffix=TAIL, raw=True, options=options,
                                 stream=True))
    assert parts[-1].done and parts[-1].done_reason == "stop"
    assert_fills("".join(p.response for p in parts))


def test_openai_completions_with_suffix(coder_server: LiveServer) -> None:
    client = openai.OpenAI(base_url=f"{coder_server.url}/v1", api_key="x", max_retries=0, timeout=300)
    # a stop word as editors send: a small model's middle may run on into code that is already in the suffix
    args: dict[str, Any] = {"model": "coder", "prompt": HEAD + "    ", "suffix": TAIL, "max_tokens": 48,
                            "temperature": 0, "stop": ["\n\n\n"]}
    whole = client.completions.create(**args)
    assert whole.choices[0].finish_reason == "stop"
    assert_fills(whole.choices[0].text)
    streamed = "".join(c.choices[0].text for c in client.completions.create(stream=True, **args) if c.choices)
    assert streamed == whole.choices[0].text
    with pytest.raises(openai.BadRequestError, match="echo"):
        client.completions.create(echo=True, **args)
