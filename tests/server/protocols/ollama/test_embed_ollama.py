"""Ollama's ``/api/embed`` and legacy ``/api/embeddings`` on a live loopback server, through the official
``ollama`` client and LangChain's ``OllamaEmbeddings``: Ollama's shapes and counts, truncation by default, the legacy
route's unnormalised vector, capabilities in ``/api/tags`` and ``/api/show``, errors as ``{"error": "..."}``."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

TEXTS = ["the cat sat on the mat", "a dog ran in the park"]


@pytest.fixture(scope="module")
def ollama_client(embed_server: Any) -> Any:
    import ollama

    return ollama.Client(host=embed_server.url, timeout=60)


def test_the_ollama_client_embeds_with_ollamas_counts(ollama_client: Any, tiny_encoder: Any) -> None:
    answer = ollama_client.embed(model="minilm-tiny", input=TEXTS)
    np.testing.assert_allclose(np.array(answer.embeddings), tiny_encoder.embed(TEXTS), rtol=0, atol=1e-6)
    tokens = sum(len(r.prompt_ids) for r in tiny_encoder.inputs.embed(TEXTS).requests)
    assert answer.model == "minilm-tiny" and answer.prompt_eval_count == tokens and answer.total_duration > 0
    one = ollama_client.embed(model="minilm-tiny", input="the sky is blue", dimensions=4)
    assert len(one.embeddings) == 1 and len(one.embeddings[0]) == 4


def test_inputs_past_the_window_are_cut_unless_truncate_is_false(embed_server: Any, tiny_encoder: Any) -> None:
    long_text = "the river water " * 60
    cut = httpx.post(f"{embed_server.url}/api/embed", json={"model": "minilm-tiny", "input": long_text}).json()
    np.testing.assert_allclose(cut["embeddings"][0], tiny_encoder.embed(long_text, truncate=True)[0], atol=1e-6)
    refused = httpx.post(f"{embed_server.url}/api/embed",
                         json={"model": "minilm-tiny", "input": long_text, "truncate": False})
    assert refused.status_code == 400 and "64" in refused.json()["error"]


def test_the_legacy_route_answers_one_unnormalised_embedding(embed_server: Any, tiny_encoder: Any) -> None:
    answer = httpx.post(f"{embed_server.url}/api/embeddings",
                        json={"model": "minilm-tiny", "prompt": "the cat", "options": {"temperature": 0}}).json()
    raw = tiny_encoder.embed("the cat", normalize=False)[0]
    np.testing.assert_allclose(answer["embedding"], raw, rtol=0, atol=1e-5)
    assert abs(np.linalg.norm(raw) - 1.0) > 1e-3  # the legacy route does not normalise, as Ollama's


def test_langchain_ollama_embeddings(embed_server: Any, tiny_encoder: Any) -> None:
    from langchain_ollama import OllamaEmbeddings

    embedder = OllamaEmbeddings(model="minilm-tiny", base_url=embed_server.url)
    np.testing.assert_allclose(embedder.embed_documents(TEXTS), tiny_encoder.embed(TEXTS), rtol=0, atol=1e-6)
    np.testing.assert_allclose(embedder.embed_query(TEXTS[0]), tiny_encoder.embed(TEXTS[0])[0], atol=1e-6)


def test_tags_and_show_say_what_each_model_can_do(embed_server: Any) -> None:
    tags = {m["name"]: m for m in httpx.get(f"{embed_server.url}/api/tags").json()["models"]}
    assert tags["minilm-tiny"]["capabilities"] == ["embedding"]
    shown = httpx.post(f"{embed_server.url}/api/show", json={"model": "tiny-chat"}).json()
    assert {"completion", "embedding"} <= set(shown["capabilities"])
    refused = httpx.post(f"{embed_server.url}/api/chat", json={"model": "minilm-tiny", "stream": False,
                                                                 "messages": [{"role": "user", "content": "hi"}]})
    assert refused.status_code == 400 and "does not generate text" in refused.json()["error"]


@pytest.mark.parametrize("body", [{"input": []}, {"input": ""}, {"input": ["a"] * 100_000}, {"input": 3},
                                  {"input": "a", "dimensions": 0}])
def test_bad_input_is_a_400_in_ollamas_shape(embed_server: Any, body: dict[str, Any]) -> None:
    answer = httpx.post(f"{embed_server.url}/api/embed", json={"model": "minilm-tiny", **body}, timeout=60)
    assert answer.status_code == 400 and isinstance(answer.json()["error"], str)
    assert httpx.post(f"{embed_server.url}/api/embeddings", json={"model": "minilm-tiny", "prompt": ""}
                      ).status_code == 400


def test_keep_alive_is_read_on_the_embed_routes(embed_server: Any) -> None:
    """keep_alive sets how long the model stays loaded after the request (tests/server/pool: its effect); here: it
    is read on both embed routes, and a duration that does not parse is a 400 naming it."""
    for path, text in (("/api/embed", "input"), ("/api/embeddings", "prompt")):
        kept = httpx.post(f"{embed_server.url}{path}", json={"model": "minilm-tiny", text: "a", "keep_alive": "5m"})
        assert kept.status_code == 200
        bad = httpx.post(f"{embed_server.url}{path}", json={"model": "minilm-tiny", text: "a", "keep_alive": "soon"})
        assert bad.status_code == 400 and "keep_alive" in bad.json()["error"]
