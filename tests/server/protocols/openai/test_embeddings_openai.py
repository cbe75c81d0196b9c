"""``POST /v1/embeddings`` on a live loopback server with the official ``openai`` client and LangChain's
``OpenAIEmbeddings``: float and base64 answers equal ``model.embed``, ``dimensions``, ``usage``, what each model can
do in ``/v1/models``, and every bad input a 400 in OpenAI's shape that leaves the server serving."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "the man is eating bread"]


@pytest.fixture(scope="module")
def client(embed_server: Any) -> Any:
    import openai

    return openai.OpenAI(base_url=f"{embed_server.url}/v1", api_key="unused", max_retries=0, timeout=60)


def test_float_and_base64_answers_are_the_models_own_vectors(client: Any, tiny_encoder: Any) -> None:
    expected = tiny_encoder.embed(TEXTS)
    as_floats = client.embeddings.create(model="minilm-tiny", input=TEXTS, encoding_format="float")
    as_base64 = client.embeddings.create(model="minilm-tiny", input=TEXTS)  # the client's default: base64
    for answer in (as_floats, as_base64):
        assert [d.index for d in answer.data] == [0, 1, 2] and answer.model == "minilm-tiny"
        np.testing.assert_allclose(np.array([d.embedding for d in answer.data]), expected, rtol=0, atol=1e-6)
    tokens = sum(len(r.prompt_ids) for r in tiny_encoder.inputs.embed(TEXTS).requests)
    assert as_floats.usage.prompt_tokens == as_floats.usage.total_tokens == tokens


def test_dimensions_token_ids_and_one_string(client: Any, tiny_encoder: Any) -> None:
    cut = client.embeddings.create(model="minilm-tiny", input="the sky is blue", dimensions=8)
    assert len(cut.data) == 1 and len(cut.data[0].embedding) == 8
    assert abs(np.linalg.norm(cut.data[0].embedding) - 1.0) < 1e-5
    ids = tiny_encoder.inputs.embed("the sky is blue").requests[0].prompt_ids
    by_ids = client.embeddings.create(model="minilm-tiny", input=[ids, ids], encoding_format="float")
    np.testing.assert_allclose(by_ids.data[1].embedding, tiny_encoder.embed("the sky is blue")[0], atol=1e-6)


def test_langchain_openai_embeddings(embed_server: Any, tiny_encoder: Any) -> None:
    from langchain_openai import OpenAIEmbeddings

    embedder = OpenAIEmbeddings(model="minilm-tiny", base_url=f"{embed_server.url}/v1", api_key="unused",
                                check_embedding_ctx_length=False)
    np.testing.assert_allclose(embedder.embed_documents(TEXTS), tiny_encoder.embed(TEXTS), rtol=0, atol=1e-6)
    np.testing.assert_allclose(embedder.embed_query(TEXTS[0]), tiny_encoder.embed(TEXTS[0])[0], atol=1e-6)


def test_a_chat_model_embeds_too_and_the_lists_say_what_each_model_can_do(client: Any, embed_server: Any) -> None:
    answer = client.embeddings.create(model="tiny-chat", input="hello", encoding_format="float")
    assert abs(np.linalg.norm(answer.data[0].embedding) - 1.0) < 1e-5  # its last token, normalised
    cards = {m["id"]: m for m in httpx.get(f"{embed_server.url}/v1/models").json()["data"]}
    assert cards["minilm-tiny"]["capabilities"] == ["embedding"]
    assert {"completion", "embedding"} <= set(cards["tiny-chat"]["capabilities"])
    refused = httpx.post(f"{embed_server.url}/v1/chat/completions",
                         json={"model": "minilm-tiny", "messages": [{"role": "user", "content": "hi"}]})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "model_not_generative"


@pytest.mark.parametrize(("body", "param"), [
    ({"input": []}, "input"),
    ({"input": ""}, "input"),
    ({"input": ["ok", ""]}, "input"),
    ({"input": ["x"] * 100_000}, "input"),
    ({"input": "the river water " * 60}, "input[0]"),  # past the model's 64 tokens
    ({"input": [[5, 10 ** 7]]}, "input[0]"),
    ({"input": "x", "dimensions": 0}, "dimensions"),
    ({"input": "x", "dimensions": 33}, "dimensions"),
    ({"input": "x", "encoding_format": "int8"}, "encoding_format"),
    ({"input": 5}, "input"),
])
def test_bad_input_is_a_400_naming_the_field_and_the_server_serves_on(embed_server: Any, body: dict[str, Any],
                                                                      param: str) -> None:
    url = embed_server.url
    answer = httpx.post(f"{url}/v1/embeddings", json={"model": "minilm-tiny", **body}, timeout=60)
    assert answer.status_code == 400, answer.text
    error = answer.json()["error"]
    assert error["type"] == "invalid_request_error" and (error["param"] or "").startswith(param), error
    assert httpx.get(f"{url}/health").status_code == 200
    assert httpx.post(f"{url}/v1/embeddings", json={"model": "minilm-tiny", "input": "ok"}).status_code == 200


def test_truncate_cuts_instead_of_refusing(embed_server: Any, tiny_encoder: Any) -> None:
    long_text = "the river water " * 60
    answer = httpx.post(f"{embed_server.url}/v1/embeddings",
                        json={"model": "minilm-tiny", "input": long_text, "truncate": True}).json()
    np.testing.assert_allclose(answer["data"][0]["embedding"], tiny_encoder.embed(long_text, truncate=True)[0],
                               atol=1e-6)
    assert answer["usage"]["prompt_tokens"] == 64


def test_input_type_gives_a_query_the_models_query_prompt(tiny_qwen3_embedding: Any) -> None:
    """A Qwen3-Embedding-style model embeds a query behind its instruction prefix and a document bare:
    ``input_type`` picks which, as ``model.embed(input_type=)`` does."""
    from qwen_stream.server.app import create_app
    from tests.support.live_server import LiveServer

    with LiveServer(create_app(tiny_qwen3_embedding, served_model_name="q3e")) as live:
        vectors = {kind: httpx.post(f"{live.url}/v1/embeddings", json={"model": "q3e", "input": TEXTS[0],
                                                                        "input_type": kind}).json()
                   for kind in ("query", "document")}
    for kind, answer in vectors.items():
        np.testing.assert_allclose(answer["data"][0]["embedding"],
                                   tiny_qwen3_embedding.embed(TEXTS[0], input_type=kind)[0], atol=1e-5)
    assert vectors["query"]["usage"]["prompt_tokens"] > vectors["document"]["usage"]["prompt_tokens"]


def test_metrics_count_embedding_inputs_and_tokens(embed_server: Any) -> None:
    def counted(name: str) -> float:
        page = httpx.get(f"{embed_server.url}/metrics").text
        lines = [line for line in page.splitlines() if line.startswith(f"qwen_stream_embedding_{name}_total{{")
                 and 'model="minilm-tiny"' in line and 'route="/v1/embeddings"' in line]
        return float(lines[0].rsplit(" ", 1)[1]) if lines else 0.0

    inputs, tokens = counted("inputs"), counted("tokens")
    httpx.post(f"{embed_server.url}/v1/embeddings", json={"model": "minilm-tiny", "input": ["a cat", "a dog"]})
    assert counted("inputs") == inputs + 2 and counted("tokens") == tokens + 8  # [CLS] a cat [SEP], twice


def test_a_backend_without_hidden_states_refuses_embeddings_by_name(qwen_tokenizer: Any) -> None:
    """A backend that cannot embed (the torch-hf runner, vLLM): a 400 that says so, on every embedding route."""
    from qwen_stream.client.loaded_model import LoadedModel
    from qwen_stream.engine.loop import Engine
    from qwen_stream.server.app import create_app
    from qwen_stream.types import SamplingParams
    from tests.support.live_server import LiveServer
    from tests.support.pooling_runner import TextOnlyRunner

    engine = Engine(TextOnlyRunner(max_slots=2), eos_token_ids=[0], max_running=2)
    model = LoadedModel.assemble(name="text-only", tokenizer=qwen_tokenizer, engine=engine,
                                 default_params=SamplingParams())
    try:
        with LiveServer(create_app(model)) as live:
            for path, body in (("/v1/embeddings", {"input": "hi"}), ("/api/embed", {"model": "text-only",
                                                                                   "input": "hi"})):
                answer = httpx.post(f"{live.url}{path}", json=body)
                assert answer.status_code == 400 and "cannot make embeddings" in answer.text
            card = httpx.get(f"{live.url}/v1/models").json()["data"][0]
            assert "embedding" not in card["capabilities"]
    finally:
        model.close()
