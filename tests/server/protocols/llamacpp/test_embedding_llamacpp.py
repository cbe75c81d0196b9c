"""llama-server's own ``POST /embedding`` on a live loopback server: its shape (``[{"index", "embedding": [[...]]}]``),
``content`` or ``input``, each ``embd_normalize`` as llama.cpp computes it, and errors in llama-server's shape."""

from __future__ import annotations

from typing import Any

import httpx
import numpy as np
import pytest

from qwen_stream.server.protocols.llamacpp.embeddings import normalized


def test_content_and_input_answer_in_llama_servers_shape(embed_server: Any, tiny_encoder: Any) -> None:
    one = httpx.post(f"{embed_server.url}/embedding", json={"content": "the cat"}).json()
    assert [item["index"] for item in one] == [0] and len(one[0]["embedding"]) == 1
    np.testing.assert_allclose(one[0]["embedding"][0], tiny_encoder.embed("the cat")[0], atol=1e-6)
    several = httpx.post(f"{embed_server.url}/embeddings", json={"input": ["the cat", "a dog"]}).json()
    assert [item["index"] for item in several] == [0, 1]


def test_model_names_the_served_model_that_embeds(embed_server: Any, tiny_chat_model: Any) -> None:
    answer = httpx.post(f"{embed_server.url}/embedding", json={"content": "the cat", "model": "tiny-chat"}).json()
    np.testing.assert_allclose(answer[0]["embedding"][0], tiny_chat_model.embed("the cat")[0], atol=1e-5)


@pytest.mark.parametrize("norm", [-1, 0, 1, 2, 3])
def test_embd_normalize_scales_as_llama_cpp(embed_server: Any, tiny_encoder: Any, norm: int) -> None:
    raw = tiny_encoder.embed("the cat", normalize=False)[0].astype(np.float64)
    answer = httpx.post(f"{embed_server.url}/embedding", json={"content": "the cat", "embd_normalize": norm}).json()
    expected = {-1: raw, 0: raw * 32760.0 / np.abs(raw).max(), 1: raw / np.abs(raw).sum(),
                2: raw / np.linalg.norm(raw), 3: raw / (np.abs(raw) ** 3).sum() ** (1 / 3)}[norm]
    np.testing.assert_allclose(answer[0]["embedding"][0], expected, rtol=1e-5, atol=1e-5)
    assert not normalized(np.zeros(3, np.float32), 2).any()
    assert np.isfinite(normalized(np.array([3.0, -4.0], np.float32), 10_000)).all()  # a huge p: the max norm
    np.testing.assert_allclose(normalized(np.array([3.0, -4.0], np.float32), 10_000), [0.75, -1.0], atol=1e-3)


@pytest.mark.parametrize("body", [{}, {"content": ""}, {"content": []}, {"content": "a", "embd_normalize": "two"},
                                  {"content": "a", "embd_normalize": -2}])
def test_bad_input_is_a_400_in_llama_servers_shape(embed_server: Any, body: dict[str, Any]) -> None:
    answer = httpx.post(f"{embed_server.url}/embedding", json=body)
    assert answer.status_code == 400
    error = answer.json()["error"]
    assert error["code"] == 400 and error["type"] == "invalid_request_error" and error["message"]
