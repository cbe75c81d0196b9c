"""``model.embed`` and ``model.rerank`` on tiny models of each kind, against sentence-transformers' own vectors:
an encoder (all-MiniLM-L6-v2's layout), Qwen3-Embedding's conventions (query instruction, last token, eos,
normalised) and a chat model (last token by default; judging for rerank)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qwen_stream.errors import ContextLengthError, UnsupportedTaskError

st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is a test extra")

TEXTS = ["the cat sat on the mat", "a dog ran in the park", "the man is eating bread", "music plays loud"]


def reference(folder: Path) -> Any:
    return st.SentenceTransformer(str(folder), device="cpu")


def test_an_encoders_vectors_equal_sentence_transformers(tiny_encoder: Any, tiny_encoder_dir: Path) -> None:
    ours = tiny_encoder.embed(TEXTS)
    assert ours.dtype == np.float32 and ours.shape == (4, 32)
    np.testing.assert_allclose(ours, reference(tiny_encoder_dir).encode(TEXTS), rtol=0, atol=1e-5)
    assert tiny_encoder.embed("the sky is blue").shape == (1, 32)


def test_an_encoder_cuts_at_its_max_seq_length_only_when_asked(tiny_encoder: Any, tiny_encoder_dir: Path) -> None:
    long_text = "the river water " * 60  # past max_seq_length 64
    with pytest.raises(ContextLengthError):
        tiny_encoder.embed(long_text)
    np.testing.assert_allclose(tiny_encoder.embed(long_text, truncate=True),
                               reference(tiny_encoder_dir).encode([long_text]), rtol=0, atol=1e-5)


def test_an_encoder_embeds_and_ranks_but_never_generates(tiny_encoder: Any) -> None:
    with pytest.raises(UnsupportedTaskError) as refused:
        tiny_encoder.chat("hello")
    assert refused.value.code == "model_not_generative"
    ranked = tiny_encoder.rerank("the cat", TEXTS, top_n=2)
    assert len(ranked) == 2 and ranked[0].score >= ranked[1].score and -1.0 <= ranked[1].score <= 1.0


def test_qwen3_embedding_conventions_equal_sentence_transformers(tiny_qwen3_embedding: Any,
                                                                 tiny_qwen3_embedding_dir: Path) -> None:
    model = reference(tiny_qwen3_embedding_dir)
    queries = ["What is the capital of China?", "Explain gravity"]
    np.testing.assert_allclose(tiny_qwen3_embedding.embed(queries, input_type="query"),
                               model.encode(queries, prompt_name="query"), rtol=0, atol=1e-5)
    np.testing.assert_allclose(tiny_qwen3_embedding.embed(TEXTS, input_type="document"), model.encode(TEXTS),
                               rtol=0, atol=1e-5)
    # the instruction matters: a query embeds differently from the same text as a document
    assert not np.allclose(tiny_qwen3_embedding.embed(queries[0], input_type="query"),
                           tiny_qwen3_embedding.embed(queries[0]))


def test_a_text_embeds_the_same_alone_and_in_a_batch_of_64(tiny_qwen3_embedding: Any) -> None:
    texts = [f"sentence {i}: " + "word " * (i % 9) for i in range(64)]
    batch = tiny_qwen3_embedding.embed(texts)
    alone = np.concatenate([tiny_qwen3_embedding.embed(text) for text in texts[:6]])
    np.testing.assert_allclose(batch[:6], alone, rtol=0, atol=1e-5)


def test_dimensions_cut_and_renormalise(tiny_qwen3_embedding: Any) -> None:
    full = tiny_qwen3_embedding.embed(TEXTS)
    cut = tiny_qwen3_embedding.embed(TEXTS, dimensions=16)
    assert cut.shape == (4, 16) and np.allclose(np.linalg.norm(cut, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(cut, full[:, :16] / np.linalg.norm(full[:, :16], axis=1, keepdims=True), atol=1e-6)


def test_a_chat_model_embeds_by_its_last_token_and_judges_for_rerank(tiny_chat_model: Any) -> None:
    vectors = tiny_chat_model.embed(["hello there", "general kenobi"])
    assert vectors.shape[0] == 2 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    mean = tiny_chat_model.embed(["hello there"], pooling="mean", normalize=False)
    assert not np.allclose(np.linalg.norm(mean), 1.0)
    ranked = tiny_chat_model.rerank("What is the capital of China?", ["Beijing.", "Gravity.", "Paris."])
    assert sorted(r.index for r in ranked) == [0, 1, 2] and all(0.0 <= r.score <= 1.0 for r in ranked)
    assert [r.score for r in ranked] == sorted((r.score for r in ranked), reverse=True)
