"""OutputProcessor: scripted engine outputs (ids) replayed through the output layer with the real Qwen tokenizer."""

from __future__ import annotations

import time
from typing import Any

import pytest

from qwen_stream.output.processor import OutputProcessor
from qwen_stream.types import FinishReason, SamplingParams, StreamEvent, TokenLogprob, TokenOutput

IM_END = 151645
ENDOFTEXT = 151643


def outputs(ids: list[int], finish: FinishReason | None, *, per_step: int = 1, prompt: int = 7) -> list[TokenOutput]:
    """What an engine would send: ``per_step`` ids per output, the last one carrying ``finish``."""
    steps = [ids[i : i + per_step] for i in range(0, len(ids), per_step)] or [[]]
    return [
        TokenOutput("req-1", step, finish if n == len(steps) - 1 else None, num_prompt_tokens=prompt)
        for n, step in enumerate(steps)
    ]


def replay(
    tokenizer: Any, params: SamplingParams, outs: list[TokenOutput]
) -> tuple[OutputProcessor, list[StreamEvent]]:
    processor = OutputProcessor(tokenizer, params)
    events = []
    for out in outs:
        events.append(processor.process(out))
        if events[-1].finished:
            break
    return processor, events


def test_eos_finish_streams_the_whole_answer(qwen_tokenizer) -> None:
    answer = "从前有座山，山里有座庙 🤖 the end."
    ids = qwen_tokenizer.encode(answer)
    processor, events = replay(qwen_tokenizer, SamplingParams(), outputs([*ids, IM_END], FinishReason.STOP))
    assert len(events) == len(ids) + 1  # one event per engine output
    assert "".join(e.delta for e in events) == events[-1].text == answer
    assert all("\ufffd" not in e.delta for e in events)
    assert [e.text for e in events] == ["".join(x.delta for x in events[: n + 1]) for n in range(len(events))]
    final = events[-1]
    assert final.finish_reason is FinishReason.STOP and final.finished and processor.finished
    assert not processor.stopped_by_string
    assert final.num_generated_tokens == len(ids) + 1  # eos counts as generated, it is just not shown
    assert final.num_prompt_tokens == 7
    assert processor.all_token_ids == [*ids, IM_END]
    assert [t for e in events for t in e.token_ids] == [*ids, IM_END]


def test_eos_is_hidden_even_when_special_tokens_are_shown(qwen_tokenizer) -> None:
    ids = [*qwen_tokenizer.encode("<|im_start|>hi"), IM_END]
    params = SamplingParams(skip_special_tokens=False)
    _, events = replay(qwen_tokenizer, params, outputs(ids, FinishReason.STOP, per_step=2))
    assert events[-1].text == "<|im_start|>hi"


def test_stop_token_ids_are_never_text(qwen_tokenizer) -> None:
    ids = [*qwen_tokenizer.encode("a b"), ENDOFTEXT]
    params = SamplingParams(skip_special_tokens=False, stop_token_ids=(ENDOFTEXT,))
    _, events = replay(qwen_tokenizer, params, outputs(ids, FinishReason.STOP))
    assert events[-1].text == "a b"


def test_length_finish_flushes_an_incomplete_character(qwen_tokenizer) -> None:
    ids = [11162, 97]  # " " + the first two bytes of 🤖, then max_new_tokens is reached
    _, events = replay(qwen_tokenizer, SamplingParams(), outputs(ids, FinishReason.LENGTH))
    assert [e.delta for e in events] == [" ", "\ufffd"]
    assert events[-1].text == qwen_tokenizer.decode(ids)
    assert events[-1].finish_reason is FinishReason.LENGTH


@pytest.mark.parametrize("per_step", [1, 3, 100])
def test_stop_string_across_tokens_ends_the_stream(qwen_tokenizer, per_step: int) -> None:
    text = "Thought: add them.\nObservation: 42\nThought: done"
    ids = qwen_tokenizer.encode(text)
    params = SamplingParams(stop=("Observation:",))
    processor, events = replay(qwen_tokenizer, params, outputs(ids, None, per_step=per_step))
    final = events[-1]
    assert final.finish_reason is FinishReason.STOP and processor.stopped_by_string
    assert final.text == "Thought: add them.\n"
    assert all("Obs" not in e.delta for e in events)
    # Counted: every token up to and including the one that completed the stop string.
    counted = final.num_generated_tokens
    assert "Observation:" in qwen_tokenizer.decode(ids[:counted])
    assert "Observation:" not in qwen_tokenizer.decode(ids[: counted - 1])
    assert processor.all_token_ids == ids[:counted]


def test_stop_string_completed_by_an_emoji_byte(qwen_tokenizer) -> None:
    ids = qwen_tokenizer.encode("讲个故事 🤖 hello")
    _, events = replay(qwen_tokenizer, SamplingParams(stop=("🤖",)), outputs(ids, None))
    assert events[-1].text == "讲个故事 "
    assert events[-1].num_generated_tokens == ids.index(244) + 1  # the last byte of the robot


def test_held_back_text_is_released_when_the_stream_ends_otherwise(qwen_tokenizer) -> None:
    ids = qwen_tokenizer.encode("see you at Obs")
    params = SamplingParams(stop=("Observation:",))
    _, events = replay(qwen_tokenizer, params, outputs(ids, FinishReason.LENGTH))
    assert "Obs" not in "".join(e.delta for e in events[:-1])
    assert events[-1].text == "see you at Obs"
    assert events[-1].finish_reason is FinishReason.LENGTH


def test_abort_finishes_with_an_empty_output(qwen_tokenizer) -> None:
    ids = qwen_tokenizer.encode("partial answer")
    outs = [*outputs(ids, None), TokenOutput("req-1", [], FinishReason.ABORT)]
    _, events = replay(qwen_tokenizer, SamplingParams(), outs)
    assert events[-1].finish_reason is FinishReason.ABORT
    assert events[-1].delta == "" and events[-1].text == "partial answer"
    assert events[-1].num_generated_tokens == len(ids)
    assert events[-1].token_ids == []


def test_no_events_after_the_finish(qwen_tokenizer) -> None:
    processor = OutputProcessor(qwen_tokenizer, SamplingParams(stop=("x",)))
    assert processor.process(TokenOutput("r", qwen_tokenizer.encode("a x"))).finished
    with pytest.raises(RuntimeError, match="already finished"):
        processor.process(TokenOutput("r", [], FinishReason.ABORT))


def test_timings_and_logprobs(qwen_tokenizer) -> None:
    start = time.perf_counter() - 5.0
    processor = OutputProcessor(qwen_tokenizer, SamplingParams(stop=("b",)), start_time=start)
    empty = processor.process(TokenOutput("r", [], num_prompt_tokens=3))
    assert empty.time_to_first_token_s is None and empty.elapsed_s >= 5.0
    ids = qwen_tokenizer.encode("a b c")  # "a", " b", " c"
    logprobs = [TokenLogprob(i, -0.5, [(i, -0.5)]) for i in ids]
    first = processor.process(TokenOutput("r", ids[:1], logprobs=logprobs[:1]))
    assert first.time_to_first_token_s is not None and first.time_to_first_token_s >= 5.0
    assert first.logprobs == logprobs[:1]
    last = processor.process(TokenOutput("r", ids[1:], logprobs=logprobs[1:]))
    assert last.finish_reason is FinishReason.STOP and last.text == "a "
    assert last.logprobs == logprobs[1:2]  # only the tokens that count
    assert last.time_to_first_token_s == first.time_to_first_token_s
    assert last.elapsed_s >= first.elapsed_s and last.num_prompt_tokens == 3


def test_bad_arguments(qwen_tokenizer) -> None:
    with pytest.raises(TypeError, match="SamplingParams"):
        OutputProcessor(qwen_tokenizer, {"stop": ["x"]})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="TokenOutput"):
        OutputProcessor(qwen_tokenizer, SamplingParams()).process([1, 2])  # type: ignore[arg-type]


class CountingTokenizer:
    """The real tokenizer, counting decode() calls (the hot path must make none)."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.backend_tokenizer = inner.backend_tokenizer
        self.all_special_ids = inner.all_special_ids
        self.decode_calls = 0

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        self.decode_calls += 1
        return str(self._inner.decode(ids, skip_special_tokens=skip_special_tokens))


def test_twenty_thousand_tokens_cost_no_decode(qwen_tokenizer) -> None:
    ids = qwen_tokenizer.encode("请给我讲一个有趣的故事 🤖 hello, world! ") * 1500
    assert len(ids) > 20_000
    counting = CountingTokenizer(qwen_tokenizer)
    processor = OutputProcessor(counting, SamplingParams(stop=("never appears",)))  # type: ignore[arg-type]
    deltas = [processor.process(out).delta for out in outputs([*ids, IM_END], FinishReason.STOP)]
    assert counting.decode_calls == 0
    assert "".join(deltas) == processor.text == qwen_tokenizer.decode(ids)
