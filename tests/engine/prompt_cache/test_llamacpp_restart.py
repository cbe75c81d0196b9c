"""The prompt cache on disk with the real llama.cpp runner (SmolLM2-135M GGUF): a seeded answer to a ~300-token
prompt, then a fresh engine on the same directory answers it from the saved KV with the same text; a prompt
sharing the system prompt loads that much; a damaged file costs a cold prefill, never a wrong answer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.llamacpp, pytest.mark.slow]

SYSTEM = "You are a careful coding agent working in a Python repository. " + " ".join(
    f"Rule {i}: read the module's docstring before editing it, keep functions short, and run the tests." for i in
    range(14))
SAMPLED: dict[str, Any] = {"temperature": 0.0, "max_new_tokens": 12}


def load(gguf_path: Path, cache: Path) -> Any:
    from qwen_stream.api import ChatModel

    return ChatModel.load(str(gguf_path), prompt_cache_dir=str(cache), context_length=1024, max_batch_size=2,
                          threads=1, progress=False)


def ask(model: Any, question: str) -> tuple[str, int, int]:
    """(text, prompt tokens, prompt tokens served from a cache)."""
    events = list(model.stream(question, system=SYSTEM, **SAMPLED))
    last = events[-1]
    return last.text, last.num_prompt_tokens, last.num_cached_tokens


def test_a_restarted_engine_answers_a_saved_prompt_from_disk_with_the_same_text(gguf_path: Path,
                                                                                 tmp_path: Path) -> None:
    cache = tmp_path / "prompts"
    first = load(gguf_path, cache)
    try:
        text, n_prompt, cached = ask(first, "What does rule 3 ask for?")
        assert n_prompt >= 256 and cached == 0 and text.strip()
    finally:
        first.close()  # its saves are written before close returns
    (entry,) = cache.glob("*/*.qsp")

    second = load(gguf_path, cache)
    try:
        assert ask(second, "What does rule 3 ask for?") == (text, n_prompt, n_prompt)  # recalled: no forward
        second.engine.reset_prefix_cache()  # the slots forget it: what follows shares the system prompt with disk only
        other_text, other_prompt, other_cached = ask(second, "Which rule mentions tests?")
        assert other_text.strip() and n_prompt - 20 <= other_cached < other_prompt
        assert second.engine.core.prompt_transfer.loaded_tokens == n_prompt + other_cached
        second.engine.reset_prefix_cache()
        seeded = list(second.stream("What does rule 3 ask for?", system=SYSTEM, seed=5, **SAMPLED))
        # a seed of its own loads only what a cold prefill computes bit for bit: here the whole saved prompt and its
        # row (computed cold in one chunk), so it is recalled and answers as the cold run did
        assert (seeded[-1].text, seeded[-1].num_cached_tokens) == (text, n_prompt)
    finally:
        second.close()

    data = bytearray(entry.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit inside the saved KV
    entry.write_bytes(bytes(data))
    third = load(gguf_path, cache)
    try:
        assert ask(third, "What does rule 3 ask for?") == (text, n_prompt, 0)  # cold, and the same text
    finally:
        third.close()
    assert not entry.exists() or entry.read_bytes() != bytes(data)  # the damaged file was deleted (then saved anew)
