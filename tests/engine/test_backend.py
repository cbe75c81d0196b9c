"""The engine seam: our Engine satisfies EngineBackend, and ChatModel runs over any backend it is given.

A scripted runner (next token = last token + 1, see test_engine.py) under the real Qwen tokenizer, whose first ids
are single ASCII characters (id 15 is "0", 16 is "1", ...), so every answer's text is known exactly.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from typing import Any

import pytest
import torch

from qwen_stream.api import ChatModel
from qwen_stream.client.loaded_model import LoadedModel
from qwen_stream.engine.backend import EngineBackend
from qwen_stream.engine.loop import Engine, wait_idle
from qwen_stream.engine.runners.base import SeqChunk
from qwen_stream.errors import EngineError
from qwen_stream.types import SamplingParams
from tests.support.scripted_runners import CountingRunner

ENDLESS = SamplingParams(temperature=0.0, max_new_tokens=10_000, ignore_eos=True)


class FailingRunner(CountingRunner):
    def forward(self, chunks: Sequence[SeqChunk]) -> torch.Tensor:
        raise RuntimeError("boom")


def chat_model(runner: CountingRunner, tokenizer: Any) -> ChatModel:
    engine = Engine(runner, eos_token_ids=[0], max_running=4, max_waiting=8)
    return ChatModel(LoadedModel.assemble(name="scripted", tokenizer=tokenizer, engine=engine, default_params=ENDLESS))


@pytest.fixture()
def scripted(qwen_tokenizer: Any) -> Iterator[ChatModel]:
    model = chat_model(CountingRunner(max_slots=4, max_seq_len=4096), qwen_tokenizer)
    yield model
    model.close()


def test_engine_is_an_engine_backend() -> None:
    engine = Engine(CountingRunner(), eos_token_ids=[0])
    assert isinstance(engine, EngineBackend)
    assert engine.is_alive() and engine.name == "scripted" and engine.vocab_size == 64
    engine.shutdown()
    assert not engine.is_alive()
    with pytest.raises(EngineError, match="shut down"):
        engine.submit([1], ENDLESS, lambda out: None)


def test_a_stop_string_ends_both_streams_and_frees_the_engine(scripted: ChatModel) -> None:
    # "0" -> "1", "2", "3", ... forever, unless the reader aborts the request when its stop string completes
    assert scripted.complete_stream([15], stop="3").collect().text == "12"

    async def read() -> str:
        return (await scripted.acomplete_stream([19], stop="7").collect()).text

    assert asyncio.run(read()) == "56"
    assert wait_idle(scripted.engine, timeout=5)


def test_batch_stops_each_answer_at_its_stop_string(scripted: ChatModel) -> None:
    answers = scripted.batch(["0", "4"], chat=False, progress=False, stop=["3", "8"])
    assert answers == ["12", "567"]
    assert wait_idle(scripted.engine, timeout=5)  # both requests were aborted, not left running


def test_an_engine_failure_raises_in_streams_and_batches(qwen_tokenizer: Any) -> None:
    model = chat_model(FailingRunner(), qwen_tokenizer)
    try:
        with pytest.raises(EngineError, match="boom"):
            model.complete_stream([15]).collect()
        with pytest.raises(EngineError, match="boom"):
            model.batch(["0", "4", "7"], chat=False, progress=False)
        assert wait_idle(model.engine, timeout=5)
    finally:
        model.close()
