"""ChatModel end to end on a tiny random qwen2 with the real Qwen tokenizer: streaming, seeds, batching,
cancellation, history folding."""

from __future__ import annotations

import asyncio
import threading

import pytest

from qwen_stream.api import ChatModel
from qwen_stream.engine.loop import wait_idle
from qwen_stream.types import FinishReason

GREEDY = dict(temperature=0.0, max_new_tokens=24, ignore_eos=True)
SEEDED = dict(temperature=1.0, top_p=0.9, top_k=50, max_new_tokens=24, seed=1234, ignore_eos=True)


def collect(model: ChatModel, query: str, **kw: object) -> tuple[str, list[str]]:
    deltas = []
    stream = model.stream(query, **kw)
    for event in stream:
        deltas.append(event.delta)
        assert event.text == "".join(deltas)
    assert stream.final is not None
    return stream.final.text, deltas


def test_streamed_text_equals_non_streamed_and_deltas_add_up(tiny_chat_model: ChatModel) -> None:
    streamed, deltas = collect(tiny_chat_model, "请给我讲一个有趣的故事", **GREEDY)
    answer, history = tiny_chat_model.chat("请给我讲一个有趣的故事", **GREEDY)
    assert streamed == answer == "".join(deltas)
    assert history == [("请给我讲一个有趣的故事", answer)]
    assert answer  # the random model says something


def test_no_half_character_is_ever_emitted(tiny_chat_model: ChatModel) -> None:
    """Random weights over a 151k vocabulary give plenty of multi-byte pieces (and some truly invalid bytes).

    A half character shown early would later be taken back: every cumulative text must be a prefix of the
    final text, and the final text must equal decoding all the ids at once (U+FFFD only where decode has it).
    """
    tokenizer = tiny_chat_model.tokenizer
    for seed in range(6):
        stream = tiny_chat_model.stream("你好 🤖", temperature=1.0, seed=seed, max_new_tokens=40, ignore_eos=True)
        events = list(stream)
        final = events[-1].text
        ids = [t for e in events for t in e.token_ids]
        assert final == tokenizer.decode(ids, skip_special_tokens=True)
        assert all(final.startswith(e.text) for e in events)
        assert any(ord(ch) > 0x7F for ch in final)  # the case under test really happened


def test_same_seed_same_text_and_different_seeds_differ(tiny_chat_model: ChatModel) -> None:
    a, _ = collect(tiny_chat_model, "Tell me a story", **SEEDED)
    b, _ = collect(tiny_chat_model, "Tell me a story", **SEEDED)
    c, _ = collect(tiny_chat_model, "Tell me a story", **{**SEEDED, "seed": 99})
    assert a == b
    assert a != c


def test_text_does_not_depend_on_the_batch(tiny_chat_model: ChatModel) -> None:
    """Greedy and seeded answers are the same alone and among 16 concurrent streams."""
    queries = [f"Question number {i}: what is {i} + {i}?" for i in range(16)]
    settings = [GREEDY if i % 2 else {**SEEDED, "seed": i} for i in range(16)]
    alone = [collect(tiny_chat_model, q, **s)[0] for q, s in zip(queries, settings, strict=True)]
    together: list[str | None] = [None] * 16

    def worker(i: int) -> None:
        together[i] = collect(tiny_chat_model, queries[i], **settings[i])[0]

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert together == alone


def test_batch_returns_the_same_answers_as_streams(tiny_chat_model: ChatModel) -> None:
    queries = ["one", "two", "three", "four", "five"]
    expected = [collect(tiny_chat_model, q, **GREEDY)[0] for q in queries]
    assert tiny_chat_model.batch(queries, progress=False, **GREEDY) == expected


def test_break_frees_the_slot_at_once(tiny_chat_model: ChatModel) -> None:
    stream = tiny_chat_model.stream("Write a very long story", temperature=0.0, max_new_tokens=400, ignore_eos=True)
    for i, _event in enumerate(stream):
        if i == 3:
            break
    stream.close()
    assert wait_idle(tiny_chat_model.engine, timeout=5)
    assert tiny_chat_model.engine.stats().running == 0


def test_chat_stream_generator_close_cancels(tiny_chat_model: ChatModel) -> None:
    gen = tiny_chat_model.chat_stream("Write a very long story", temperature=0.0, max_new_tokens=400,
                                      ignore_eos=True)
    first = next(gen)
    second = next(gen)
    assert second.startswith(first)  # cumulative, as the seed prints it
    gen.close()
    assert wait_idle(tiny_chat_model.engine, timeout=5)


def test_stop_string_is_never_emitted(tiny_chat_model: ChatModel) -> None:
    full, _ = collect(tiny_chat_model, "Tell me a story", **GREEDY)
    stop = full[len(full) // 2: len(full) // 2 + 2]
    assert stop.strip(), "need a visible stop string"
    text, deltas = collect(tiny_chat_model, "Tell me a story", stop=[stop], **GREEDY)
    assert text == full[: full.index(stop)]
    assert stop not in "".join(deltas)
    assert wait_idle(tiny_chat_model.engine, timeout=5)


def test_finish_reasons_and_counts(tiny_chat_model: ChatModel) -> None:
    stream = tiny_chat_model.stream("hi", temperature=0.0, max_new_tokens=5, ignore_eos=True)
    final = stream.collect()
    assert final.finish_reason is FinishReason.LENGTH
    assert final.num_generated_tokens == 5
    assert final.num_prompt_tokens == stream.prompt_info.num_tokens > 0
    assert final.time_to_first_token_s is not None and final.elapsed_s >= final.time_to_first_token_s


def test_too_long_query_raises_value_error(tiny_chat_model: ChatModel) -> None:
    with pytest.raises(ValueError, match="token"):
        tiny_chat_model.stream("word " * 2000, max_new_tokens=16)
    assert tiny_chat_model.engine.stats().running == 0


def test_long_history_drops_oldest_turns(tiny_chat_model: ChatModel) -> None:
    history = [(f"question {i} " + "blah " * 40, f"answer {i} " + "blah " * 40) for i in range(20)]
    stream = tiny_chat_model.stream("and now?", history=history, max_new_tokens=64, temperature=0.0)
    stream.close()
    assert stream.prompt_info.dropped_turns > 0
    assert stream.prompt_info.num_tokens <= tiny_chat_model.context_length - 64


def test_history_as_pairs_or_messages_is_the_same_prompt(tiny_chat_model: ChatModel) -> None:
    pairs = [("Hi", "Hello!")]
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    a, _ = collect(tiny_chat_model, "How are you?", history=pairs, **GREEDY)
    b, _ = collect(tiny_chat_model, "How are you?", history=messages, **GREEDY)
    assert a == b


def test_bad_arguments_are_clear_errors(tiny_chat_model: ChatModel) -> None:
    with pytest.raises(ValueError):
        tiny_chat_model.stream("hi", temperature=-1)
    with pytest.raises(TypeError, match="unknown sampling parameter"):
        tiny_chat_model.stream("hi", temprature=0.5)
    with pytest.raises(ValueError, match="max_new_tokens"):
        tiny_chat_model.stream("hi", max_new_tokens=tiny_chat_model.context_length)
    with pytest.raises(TypeError):
        tiny_chat_model.stream(123)  # type: ignore[arg-type]


def test_asyncio_streams_batch_and_cancel(tiny_chat_model: ChatModel) -> None:
    expected = [collect(tiny_chat_model, f"async {i}", **GREEDY)[0] for i in range(4)]

    async def one(i: int) -> str:
        return (await tiny_chat_model.astream(f"async {i}", params=tiny_chat_model.sampling_params(**GREEDY)).collect()).text

    async def cancelled() -> None:
        stream = tiny_chat_model.astream("long", temperature=0.0, max_new_tokens=400, ignore_eos=True)
        async for _ in stream:
            break
        await stream.aclose()

    async def main() -> list[str]:
        results = await asyncio.gather(*(one(i) for i in range(4)), cancelled())
        return list(results[:4])

    assert asyncio.run(main()) == expected
    assert wait_idle(tiny_chat_model.engine, timeout=5)
