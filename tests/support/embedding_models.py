"""Tiny embedding models for the tests (no download): a BERT laid out as all-MiniLM-L6-v2 and a qwen3 laid out as
Qwen3-Embedding, both sentence-transformers folders that qwen-stream and sentence-transformers load alike."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from qwen_stream.models.tiny import make_tiny_encoder_dir

    return make_tiny_encoder_dir(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def tiny_qwen3_embedding_dir(tmp_path_factory: pytest.TempPathFactory, qwen_tokenizer: Any) -> Path:
    from qwen_stream.models.tiny import make_tiny_embedding_dir

    return make_tiny_embedding_dir(tmp_path_factory.mktemp("tiny-qwen3-embedding"), qwen_tokenizer)


@pytest.fixture(scope="session")
def tiny_encoder(tiny_encoder_dir: Path) -> Iterator[Any]:
    from qwen_stream.api import ChatModel

    model = ChatModel.load(str(tiny_encoder_dir), progress=False, max_batch_size=8)
    yield model
    model.close()


@pytest.fixture(scope="session")
def tiny_qwen3_embedding(tiny_qwen3_embedding_dir: Path) -> Iterator[Any]:
    from qwen_stream.api import ChatModel

    model = ChatModel.load(str(tiny_qwen3_embedding_dir), runner="torch", progress=False, max_batch_size=16,
                           context_length=512)
    yield model
    model.close()
