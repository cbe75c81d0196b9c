"""The seed's transformers-style calls (qwen_stream.compat): model.chat and model.chat_stream on the tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize("generation_config", ["greedy", "sampled"])
def test_compat_chat_returns_response_and_history(tiny_model_dir: Path, generation_config: str) -> None:
    from qwen_stream.compat import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir), trust_remote_code=True)
    model = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), device_map="cpu", trust_remote_code=True)
    try:
        config = GenerationConfig.from_pretrained(str(tiny_model_dir))
        config.max_new_tokens = 12
        if generation_config == "greedy":
            config.do_sample = False
        response, history = model.chat(tokenizer, "Hi", history=None, generation_config=config)
        assert history == [("Hi", response)]
        streamed = list(model.chat_stream(tokenizer, "Hi", history=None, generation_config=config))
        if generation_config == "greedy":
            assert streamed[-1] == response
    finally:
        model.close()
