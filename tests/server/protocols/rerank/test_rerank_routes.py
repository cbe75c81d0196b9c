"""``/v1/rerank`` and ``/rerank`` (the Jina/Cohere shape Continue, Dify and Open WebUI send) and vLLM's ``/score`` on
a live loopback server: by cosine on an embedding model, by Qwen3-Reranker's P("yes") on a chat model; ``top_n``,
``return_documents``, ``usage``, and bad input a 400."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

QUERY = "the man is eating"
DOCUMENTS = ["the man is eating bread", "the sky is blue", "a dog ran in the park"]


def test_a_continue_style_rerank_request(embed_server: Any, tiny_encoder: Any) -> None:
    """What Continue's reranker posts (Jina's API): bearer auth, model, query, documents; it reads index and
    relevance_score."""
    answer = httpx.post(f"{embed_server.url}/v1/rerank", headers={"Authorization": "Bearer unused"},
                        json={"model": "minilm-tiny", "query": QUERY, "documents": DOCUMENTS}, timeout=60)
    assert answer.status_code == 200
    body = answer.json()
    results = body["results"]
    expected = tiny_encoder.rerank(QUERY, DOCUMENTS)
    assert [r["index"] for r in results] == [r.index for r in expected]
    assert [r["relevance_score"] for r in results] == pytest.approx([r.score for r in expected], abs=1e-6)
    assert [r["document"]["text"] for r in results] == [DOCUMENTS[r.index] for r in expected]
    assert body["model"] == "minilm-tiny" and body["usage"]["total_tokens"] > 0


def test_top_n_return_documents_and_text_objects(embed_server: Any) -> None:
    body = {"model": "minilm-tiny", "query": QUERY, "documents": [{"text": d} for d in DOCUMENTS], "top_n": 2,
            "return_documents": False}
    results = httpx.post(f"{embed_server.url}/rerank", json=body).json()["results"]
    assert len(results) == 2 and all("document" not in r for r in results)
    assert results[0]["relevance_score"] >= results[1]["relevance_score"]


def test_a_chat_model_ranks_by_p_yes(embed_server: Any, tiny_chat_model: Any) -> None:
    results = httpx.post(f"{embed_server.url}/v1/rerank",
                         json={"model": "tiny-chat", "query": QUERY, "documents": DOCUMENTS}, timeout=60
                         ).json()["results"]
    expected = tiny_chat_model.rerank(QUERY, DOCUMENTS)
    assert [r["relevance_score"] for r in results] == pytest.approx([r.score for r in expected], abs=1e-5)
    assert all(0.0 <= r["relevance_score"] <= 1.0 for r in results)


def test_vllms_score_pairs_texts_in_order(embed_server: Any, tiny_encoder: Any) -> None:
    one_to_many = httpx.post(f"{embed_server.url}/score", json={"model": "minilm-tiny", "text_1": QUERY,
                                                                 "text_2": DOCUMENTS}).json()
    assert [d["index"] for d in one_to_many["data"]] == [0, 1, 2] and one_to_many["object"] == "list"
    by_index = {r.index: r.score for r in tiny_encoder.rerank(QUERY, DOCUMENTS)}
    assert [d["score"] for d in one_to_many["data"]] == pytest.approx([by_index[i] for i in range(3)], abs=1e-6)
    pairwise = httpx.post(f"{embed_server.url}/v1/score", json={"model": "minilm-tiny", "text_1": [QUERY, "sky"],
                                                                 "text_2": DOCUMENTS[:2]}).json()
    assert len(pairwise["data"]) == 2 and pairwise["usage"]["total_tokens"] > 0


@pytest.mark.parametrize(("path", "body"), [
    ("/v1/rerank", {"query": QUERY, "documents": []}),
    ("/v1/rerank", {"query": "", "documents": DOCUMENTS}),
    ("/v1/rerank", {"query": QUERY, "documents": ["ok", ""]}),
    ("/v1/rerank", {"query": QUERY, "documents": DOCUMENTS, "top_n": 0}),
    ("/v1/rerank", {"query": QUERY, "documents": ["d"] * 100_000}),
    ("/score", {"text_1": ["a", "b"], "text_2": ["c", "d", "e"]}),
])
def test_bad_input_is_a_400(embed_server: Any, path: str, body: dict[str, Any]) -> None:
    answer = httpx.post(f"{embed_server.url}{path}", json={"model": "minilm-tiny", **body}, timeout=60)
    assert answer.status_code == 400 and answer.json()["error"]["message"]
    assert httpx.post(f"{embed_server.url}/rerank", json={"model": "minilm-tiny", "query": QUERY,
                                                          "documents": DOCUMENTS}).status_code == 200


def test_an_instruction_is_the_judges_task(embed_server: Any, tiny_chat_model: Any) -> None:
    """``instruction`` replaces the judging prompt's default task (Qwen3-Reranker's <Instruct>), on both routes."""
    task = "Judge whether the document is about food"
    ranked = httpx.post(f"{embed_server.url}/v1/rerank", json={"model": "tiny-chat", "query": QUERY,
                                                                "documents": DOCUMENTS, "instruction": task},
                        timeout=60).json()["results"]
    expected = tiny_chat_model.rerank(QUERY, DOCUMENTS, instruction=task)
    assert [r["relevance_score"] for r in ranked] == pytest.approx([r.score for r in expected], abs=1e-5)
    default = {r.index: r.score for r in tiny_chat_model.rerank(QUERY, DOCUMENTS)}
    assert any(abs(default[r.index] - r.score) > 1e-6 for r in expected)  # the prompt changed, so did the scores
    scored = httpx.post(f"{embed_server.url}/score", json={"model": "tiny-chat", "text_1": QUERY,
                                                           "text_2": DOCUMENTS[0], "instruction": task}).json()
    by_index = {r.index: r.score for r in expected}
    assert scored["data"][0]["score"] == pytest.approx(by_index[0], abs=1e-5)
