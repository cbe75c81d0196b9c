"""The engine-backend contract, run on every backend (native step loop, vLLM) through the same ChatModel.

What a front end relies on: deltas that add up to the answer, finish reasons and counts, stop strings cut before
they show, aborts that free the request within a step, many concurrent streams, an immediate refusal when full.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from qwen_stream.errors import EngineOverloadedError
from qwen_stream.types import FinishReason

GREEDY: dict[str, Any] = {"temperature": 0.0, "repetition_penalty": 1.0}
QUESTIONS = ["Tell me a story.", "What is 2+2?", "Name a colour.", "Why is the sky blue?", "Say hello.",
             "Count to ten.", "Write a haiku.", "Describe a cat."]


def answer(model: Any, query: str, **args: Any) -> tuple[Any, list[int]]:
    """The final event and every token id of the answer (an event carries only its own new ids)."""
    events = list(model.stream(query, **args))
    return events[-1], [t for e in events for t in e.token_ids]


def idle(model: Any, timeout: float = 30.0) -> bool:
    """True once the backend has no unfinished request (an abort lands within one step; vLLM's runs in another
    process, and this machine may be busy)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if model.engine.num_unfinished == 0:
            return True
        time.sleep(0.01)
    return False


def test_the_backend_implements_the_seam(backend_model: Any) -> None:
    from qwen_stream.engine.backend import EngineBackend

    engine = backend_model.engine
    assert isinstance(engine, EngineBackend) and engine.is_alive()
    assert engine.max_model_len == backend_model.context_length == 512 and engine.vocab_size >= 151_643
    assert (engine.max_running, engine.max_waiting) == (4, 4)


def test_deltas_add_up_to_the_answer_and_greedy_repeats(backend_model: Any) -> None:
    events = list(backend_model.stream("Tell me a story.", max_new_tokens=24, **GREEDY))
    final, ids = events[-1], [t for e in events for t in e.token_ids]
    assert final.finished and not any(e.finished for e in events[:-1])
    assert "".join(e.delta for e in events) == final.text
    assert final.num_generated_tokens == len(ids) > 0
    assert final.num_prompt_tokens > 0 and final.time_to_first_token_s is not None
    again, again_ids = answer(backend_model, "Tell me a story.", max_new_tokens=24, **GREEDY)
    assert again.text == final.text and again_ids == ids


def test_finish_reasons_and_the_stop_token_is_never_shown(backend_model: Any) -> None:
    long, long_ids = answer(backend_model, "Count to ten.", max_new_tokens=7, ignore_eos=True, **GREEDY)
    assert long.finish_reason is FinishReason.LENGTH and long.num_generated_tokens == len(long_ids) == 7
    # make the third greedy token a stop token: the answer ends with "stop" and shows only the two before it
    third = long_ids[2]
    assert third not in long_ids[:2]
    stopped, stopped_ids = answer(backend_model, "Count to ten.", max_new_tokens=7, stop_token_ids=[third],
                                  **GREEDY)
    assert stopped.finish_reason is FinishReason.STOP
    assert stopped_ids == long_ids[:2] and stopped.num_generated_tokens == 2
    assert idle(backend_model)


def test_a_stop_string_ends_the_answer_before_it_shows(backend_model: Any) -> None:
    whole = backend_model.stream("Why is the sky blue?", max_new_tokens=40, ignore_eos=True, **GREEDY).collect()
    assert len(whole.text) > 12, whole.text
    stop = whole.text[6:10]
    events = list(backend_model.stream("Why is the sky blue?", max_new_tokens=40, ignore_eos=True, stop=[stop],
                                       **GREEDY))
    cut = events[-1]
    assert cut.finish_reason is FinishReason.STOP
    assert cut.text == whole.text[:whole.text.index(stop)] and stop not in "".join(e.delta for e in events)
    assert idle(backend_model)  # the stop string aborted the request: nothing computes on


def test_abort_frees_the_request_within_a_step(backend_model: Any) -> None:
    stream = backend_model.stream("Tell me a story.", max_new_tokens=400, ignore_eos=True, **GREEDY)
    seen = [next(stream), next(stream)]
    assert not seen[-1].finished
    stream.close()
    assert idle(backend_model)
    # cancelled before it ever ran: still ends, and the next request is served as usual
    backend_model.stream("Say hello.", max_new_tokens=400, ignore_eos=True, **GREEDY).cancel()
    assert idle(backend_model)
    assert backend_model.stream("Say hello.", max_new_tokens=3, **GREEDY).collect().finished


def test_many_concurrent_streams_all_finish(backend_model: Any) -> None:
    results: dict[int, Any] = {}

    def ask(i: int) -> None:
        results[i] = backend_model.stream(QUESTIONS[i], max_new_tokens=12, ignore_eos=True, **GREEDY).collect()

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(backend_model.engine.max_running + backend_model.engine.max_waiting)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert sorted(results) == list(range(len(threads)))
    assert all(r.finish_reason is FinishReason.LENGTH and r.num_generated_tokens == 12 for r in results.values())
    assert idle(backend_model)


def test_asyncio_streams_run_together_and_cancel(backend_model: Any) -> None:
    async def main() -> tuple[list[str], bool]:
        async def answer(question: str) -> str:
            return (await backend_model.astream(question, max_new_tokens=8, **GREEDY).collect()).text

        texts = await asyncio.gather(*(answer(q) for q in QUESTIONS[:3]))
        stream = backend_model.astream("Tell me a story.", max_new_tokens=400, ignore_eos=True, **GREEDY)
        task = asyncio.ensure_future(stream.collect())
        await asyncio.sleep(0.5)
        task.cancel()  # a disconnected client: the request is aborted
        with pytest.raises(asyncio.CancelledError):
            await task
        return list(texts), True

    texts, _ = asyncio.run(main())
    assert len(texts) == 3
    assert idle(backend_model)


def test_overload_is_refused_at_once_and_frees_nothing_else(backend_model: Any) -> None:
    capacity = backend_model.engine.max_running + backend_model.engine.max_waiting
    assert capacity <= len(QUESTIONS)
    streams = [backend_model.stream(q, max_new_tokens=400, ignore_eos=True, **GREEDY) for q in QUESTIONS[:capacity]]
    try:
        started = time.monotonic()
        with pytest.raises(EngineOverloadedError) as refused:
            backend_model.stream("One more?", max_new_tokens=4, **GREEDY)
        assert time.monotonic() - started < 1.0 and refused.value.retry_after_s > 0
    finally:
        for stream in streams:
            stream.close()
    assert idle(backend_model)
    assert backend_model.stream("One more?", max_new_tokens=3, **GREEDY).collect().finished


def test_same_seed_same_text_and_logprobs(backend_model: Any) -> None:
    args: dict[str, Any] = {"max_new_tokens": 10, "temperature": 1.0, "top_p": 0.95, "seed": 1234, "logprobs": 2}
    _, first = answer(backend_model, "Write a haiku.", **args)
    events = list(backend_model.stream("Write a haiku.", **args))
    assert [t for e in events for t in e.token_ids] == first
    logprobs = [lp for e in events for lp in (e.logprobs or [])]
    assert [lp.token_id for lp in logprobs] == first
    assert all(lp.logprob <= 0.0 and len(lp.top) == 2 and lp.top[0][1] >= lp.top[1][1] for lp in logprobs)


def test_reset_prefix_cache_keeps_serving(backend_model: Any) -> None:
    _, before = answer(backend_model, "Describe a cat.", max_new_tokens=6, **GREEDY)
    backend_model.engine.reset_prefix_cache()
    _, after = answer(backend_model, "Describe a cat.", max_new_tokens=6, **GREEDY)
    assert after == before
    assert backend_model.engine.is_alive()
