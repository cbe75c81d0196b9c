"""llama.cpp's own API with the request shapes its clients send (httpx on a live server, the tiny model):
/completion whole and streamed, prompts as text, ids or both, n_probs, return_tokens, its refusals in its error
shape; /props, /slots, /apply-template; /tokenize and /detokenize in llama.cpp's fields beside vLLM's; the OpenAI
routes without /v1 through the openai client; system_fingerprint."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from qwen_stream.server.app import create_app
from tests.support.live_server import LiveServer

# What llama.cpp's web UI and scripts send besides the prompt (its defaults, its full sampler list).
WEB_UI = {"n_predict": 12, "temperature": 0.8, "top_k": 40, "top_p": 0.95, "min_p": 0.05, "seed": 11,
          "repeat_penalty": 1.0, "repeat_last_n": 64, "dry_multiplier": 0.0, "xtc_probability": 0.0,
          "typical_p": 1.0, "mirostat": 0, "cache_prompt": True, "id_slot": -1, "timings_per_token": False,
          "samplers": ["dry", "top_k", "typ_p", "top_p", "min_p", "xtc", "temperature"], "ignore_eos": True}
PROMPT = "The capital of France is"


def lines(response: httpx.Response) -> list[dict[str, Any]]:
    events = [line for line in response.text.split("\n\n") if line]
    assert all(event.startswith("data: {") for event in events), events[-1]  # no [DONE], as llama.cpp
    return [json.loads(event.removeprefix("data: ")) for event in events]


def test_completion_whole_has_llama_cpps_fields(http: httpx.Client, tiny_chat_model: Any) -> None:
    body = http.post("/completion", json={"prompt": PROMPT, **WEB_UI, "return_tokens": True}).json()
    assert body["stop"] is True and body["stop_type"] == "limit" and body["model"] == "tiny-qwen"
    assert body["tokens_predicted"] == 12 == len(body["tokens"])
    assert tiny_chat_model.tokenizer.decode(body["tokens"]) == body["content"]
    assert body["tokens_evaluated"] == len(tiny_chat_model.tokenizer.encode(PROMPT)) and body["prompt"] == PROMPT
    assert body["generation_settings"]["n_ctx"] == 512 and body["generation_settings"]["seed"] == 11
    assert {"prompt_n", "prompt_ms", "predicted_n", "predicted_per_second", "cache_n"} <= set(body["timings"])


def test_completion_streamed_adds_up_to_the_whole(http: httpx.Client) -> None:
    whole = http.post("/completion", json={"prompt": PROMPT, **WEB_UI}).json()
    events = lines(http.post("/completion", json={"prompt": PROMPT, **WEB_UI, "stream": True}))
    assert all(not e["stop"] and e["tokens"] for e in events[:-1]) and events[-1]["stop"]
    assert "".join(e["content"] for e in events) == whole["content"]
    assert sum(len(e["tokens"]) for e in events) == 12 and events[-1]["timings"]["predicted_n"] == 12


def test_a_prompt_as_ids_or_mixed_is_the_same_prompt(http: httpx.Client, tiny_chat_model: Any) -> None:
    ids = tiny_chat_model.tokenizer.encode(PROMPT)
    greedy = {"n_predict": 6, "temperature": 0}
    as_text = http.post("/completion", json={"prompt": PROMPT, **greedy}).json()
    as_ids = http.post("/completion", json={"prompt": ids, **greedy}).json()
    mixed = http.post("/completion", json={"prompt": [*ids[:2], tiny_chat_model.tokenizer.decode(ids[2:])],
                                           **greedy}).json()
    assert as_text["content"] == as_ids["content"] == mixed["content"]
    assert as_ids["tokens_evaluated"] == len(ids)


def test_response_fields_pick_and_unnest(http: httpx.Client) -> None:
    body = {"prompt": PROMPT, "n_predict": 2, "response_fields": ["content", "generation_settings/n_ctx"]}
    picked = http.post("/completion", json=body).json()
    assert set(picked) == {"content", "n_ctx"} and picked["n_ctx"] == 512


def test_n_probs_reports_each_tokens_alternatives(http: httpx.Client) -> None:
    body = http.post("/completion", json={"prompt": PROMPT, "n_predict": 3, "n_probs": 4, "temperature": 0}).json()
    probs = body["completion_probabilities"]
    assert len(probs) == 3 and all(len(p["top_logprobs"]) == 4 for p in probs)
    assert all(p["id"] == p["top_logprobs"][0]["id"] and p["logprob"] <= 0 for p in probs)  # greedy: the best
    assert "".join(p["token"] for p in probs) == body["content"]


@pytest.mark.parametrize(("change", "mentions"), [
    ({"mirostat": 2}, "mirostat"), ({"dry_multiplier": 0.8}, "dry_multiplier"), ({"lora": [{"id": 0}]}, "lora"),
    ({"samplers": ["top_k", "magic"]}, "magic"), ({"frobnicate": 1}, "frobnicate: unknown field"),
    ({"prompt": ["one", "two"]}, "several prompts"), ({"n_probs": 99}, "n_probs"),
    ({"repeat_penalty": 1.2, "repeat_last_n": 64}, "repeat_last_n"),
    ({"grammar": 'root ::= "x'}, "grammar"),
])
def test_refusals_name_the_field_in_llama_cpps_error_shape(http: httpx.Client, change: dict[str, Any],
                                                           mentions: str) -> None:
    refused = http.post("/completion", json={"prompt": PROMPT, "n_predict": 2, **change})
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert (error["code"], error["type"]) == (400, "invalid_request_error") and mentions in error["message"], error


def test_props_slots_and_apply_template(http: httpx.Client, tiny_chat_model: Any) -> None:
    props = http.get("/props").json()
    assert props["default_generation_settings"]["n_ctx"] == 512 and props["total_slots"] == 16
    assert props["chat_template"] == tiny_chat_model.tokenizer.chat_template and props["model_alias"] == "tiny-qwen"
    slots = http.get("/slots").json()
    assert [slot["id"] for slot in slots] == list(range(16)) and not any(s["is_processing"] for s in slots)
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    prompt = http.post("/apply-template", json={"messages": messages}).json()["prompt"]
    assert prompt == tiny_chat_model.inputs.chat_prompt(messages).text and prompt.endswith("<|im_start|>assistant\n")


def test_tokenize_and_detokenize_in_llama_cpps_fields(http: httpx.Client, tiny_chat_model: Any) -> None:
    text = "Hello <|im_end|> world é"
    special = http.post("/tokenize", json={"content": text}).json()["tokens"]
    plain = http.post("/tokenize", json={"content": text, "parse_special": False}).json()["tokens"]
    assert 151645 in special and 151645 not in plain  # <|im_end|> as the special token, or as its characters
    pieces = http.post("/tokenize", json={"content": "é!", "with_pieces": True}).json()["tokens"]
    assert [p["id"] for p in pieces] == tiny_chat_model.tokenizer.encode("é!")
    assert "".join(p["piece"] for p in pieces if isinstance(p["piece"], str)) in ("é!", "!")
    for ids in (special, plain):
        back = http.post("/detokenize", json={"tokens": ids}).json()
        assert back["content"] == back["prompt"] == text  # llama.cpp's name and vLLM's, one answer
    vllm = http.post("/tokenize", json={"prompt": text, "return_token_strs": True}).json()
    assert vllm["count"] == len(vllm["tokens"]) == len(vllm["token_strs"]) and vllm["max_model_len"] == 512
    # Qwen's tokenizer adds no BOS: add_special / add_special_tokens are read, and change nothing here
    for name in ("add_special", "add_special_tokens"):
        key = "content" if name == "add_special" else "prompt"
        assert http.post("/tokenize", json={key: text, name: True}).json()["tokens"] == vllm["tokens"]
    both = http.post("/tokenize", json={"prompt": text, "content": text})
    assert both.status_code == 400 and "give one of prompt, content" in both.text


def test_openai_routes_without_v1_and_the_system_fingerprint(server: LiveServer) -> None:
    client = openai.OpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=60)  # no /v1
    assert [m.id for m in client.models.list()] == ["tiny-qwen"]
    args = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    whole = client.chat.completions.create(**args)
    chunks = list(client.chat.completions.create(stream=True, **args))
    text = client.completions.create(model="m", prompt="hi", max_tokens=3)
    fingerprints = {whole.system_fingerprint, text.system_fingerprint, *(c.system_fingerprint for c in chunks)}
    assert len(fingerprints) == 1 and str(fingerprints.pop()).startswith("fp_")


@pytest.fixture(scope="module")
def keyed(tiny_chat_model: Any) -> Iterator[str]:
    with LiveServer(create_app(tiny_chat_model, api_key=["k1", "k2"])) as live:
        yield live.url


CHAT = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 1}
KEYED_ROUTES = [("POST", "/completion", {"prompt": "x", "n_predict": 1}), ("GET", "/props", None),
                ("GET", "/slots", None), ("POST", "/apply-template", {"messages": CHAT["messages"]}),
                ("POST", "/chat/completions", CHAT)]


@pytest.mark.parametrize(("method", "route", "body"), KEYED_ROUTES)
def test_llama_cpp_routes_need_one_of_the_keys(keyed: str, method: str, route: str, body: Any) -> None:
    missing = httpx.request(method, keyed + route, json=body)
    assert missing.status_code == 401
    if route != "/chat/completions":  # llama.cpp's error shape on its own routes
        assert missing.json()["error"]["type"] == "authentication_error"
    for key in ("k1", "k2"):
        opened = httpx.request(method, keyed + route, json=body, headers={"Authorization": f"Bearer {key}"})
        assert opened.status_code == 200, opened.text
