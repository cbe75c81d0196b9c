"""The seed's transformers-style calls (qwen_stream.compat): model.chat and model.chat_stream on the tiny model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="module")
def compat(tiny_model_dir: Path) -> Iterator[tuple[Any, Any]]:
    """The tokenizer and model as the seed loads them (once for both generation configs)."""
    from qwen_stream.compat import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir), trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), device_map="cpu", trust_remote_code=True)
    yield tokenizer, model
    model.close()


@pytest.mark.parametrize("generation_config", ["greedy", "sampled"])
def test_compat_chat_returns_response_and_history(compat: tuple[Any, Any], tiny_model_dir: Path,
                                                  generation_config: str) -> None:
    from qwen_stream.compat import GenerationConfig

    tokenizer, model = compat
    config = GenerationConfig.from_pretrained(str(tiny_model_dir))
    config.max_new_tokens = 12
    if generation_config == "greedy":
        config.do_sample = False
    response, history = model.chat(tokenizer, "Hi", history=None, generation_config=config)
    assert history == [("Hi", response)]
    streamed = list(model.chat_stream(tokenizer, "Hi", history=None, generation_config=config))
    if generation_config == "greedy":
        assert streamed[-1] == response
