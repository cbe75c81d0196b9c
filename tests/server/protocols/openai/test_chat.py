"""The OpenAI routes through the official `openai` client against a real server with the tiny model."""

from __future__ import annotations

from typing import Any

import httpx

from tests.support.live_server import LiveServer, wait_until_idle

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Tell me a story 🤖"}]


def stream_chat(client: Any, **kwargs: Any) -> tuple[str, str | None, Any, list[Any]]:
    """Text, finish reason, usage and all chunks of one streamed chat answer."""
    chunks = list(client.chat.completions.create(model="tiny-qwen", stream=True, **kwargs))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    finish = next((c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason), None)
    usage = chunks[-1].usage if chunks else None
    return text, finish, usage, chunks


def prompt_tokens(model: Any, messages: list[dict[str, str]]) -> int:
    return len(model.inputs.prompter.build(messages, max_prompt_tokens=model.context_length).ids)


def test_streamed_text_equals_non_streamed_text_for_the_same_seed(client: Any, tiny_chat_model: Any) -> None:
    args = {"messages": MESSAGES, "max_tokens": 24, "temperature": 0.9, "seed": 1234}
    whole = client.chat.completions.create(model="tiny-qwen", **args)
    text, finish, usage, chunks = stream_chat(client, stream_options={"include_usage": True}, **args)

    assert whole.choices[0].message.content == text and text
    assert whole.choices[0].finish_reason == finish == "length"
    assert whole.model == "tiny-qwen" and whole.id.startswith("chatcmpl-")
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len({c.id for c in chunks}) == 1  # one id for the whole answer
    expected_prompt = prompt_tokens(tiny_chat_model, MESSAGES)
    for u in (whole.usage, usage):
        assert u.prompt_tokens == expected_prompt
        assert u.completion_tokens == 24
        assert u.total_tokens == expected_prompt + 24
    assert chunks[-1].choices == []  # the usage chunk carries no choice


def test_usage_chunk_only_when_asked(client: Any) -> None:
    _, _, usage, chunks = stream_chat(client, messages=MESSAGES, max_tokens=4, temperature=0)
    assert usage is None and all(c.choices for c in chunks)


def test_different_seeds_give_different_answers(client: Any) -> None:
    texts = {client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=16, temperature=1.0,
                                            seed=seed).choices[0].message.content for seed in (1, 2, 3)}
    assert len(texts) > 1


def test_stop_string_across_a_token_boundary(client: Any) -> None:
    args = {"messages": MESSAGES, "max_tokens": 40, "temperature": 0}
    full = client.chat.completions.create(model="m", logprobs=True, **args).choices[0]
    tokens = [entry.token for entry in full.logprobs.content]
    stop = _stop_spanning_two_tokens(tokens)
    expected = full.message.content[: full.message.content.index(stop)]

    whole = client.chat.completions.create(model="m", stop=[stop], **args).choices[0]
    text, finish, _, _ = stream_chat(client, stop=stop, **args)
    assert whole.message.content == text == expected
    assert whole.finish_reason == finish == "stop"
    assert stop not in text


def _stop_spanning_two_tokens(tokens: list[str]) -> str:
    """The end of one token and the start of the next, both whole characters."""
    for i in range(2, len(tokens) - 1):
        left, right = tokens[i], tokens[i + 1]
        if len(left.strip()) >= 2 and len(right.strip()) >= 2 and "\ufffd" not in left + right:
            return left[-2:] + right[:2]
    raise AssertionError(f"no two neighbouring whole-character tokens in {tokens!r}")


def test_n_choices_use_seed_plus_index(client: Any) -> None:
    args = {"messages": MESSAGES, "max_tokens": 12, "temperature": 1.0}
    both = client.chat.completions.create(model="m", n=2, seed=50, **args)
    singles = [client.chat.completions.create(model="m", seed=50 + i, **args).choices[0].message.content
               for i in range(2)]
    assert [c.message.content for c in sorted(both.choices, key=lambda c: c.index)] == singles
    assert both.usage.completion_tokens == 24

    chunks = list(client.chat.completions.create(model="m", n=2, seed=50, stream=True, **args))
    streamed = ["".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == i)
                for i in range(2)]
    assert streamed == singles


def test_logprobs_name_the_generated_tokens(client: Any, tiny_chat_model: Any) -> None:
    choice = client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=10, temperature=0,
                                            logprobs=True, top_logprobs=3).choices[0]
    content = choice.logprobs.content
    assert len(content) == 10
    assert bytes(b for entry in content for b in entry.bytes).decode("utf-8", "replace") == choice.message.content
    for entry in content:
        assert len(entry.top_logprobs) == 3
        assert entry.logprob <= 0.0
        # Greedy: the chosen token is the most likely one.
        assert entry.top_logprobs[0].token == entry.token
        assert abs(entry.top_logprobs[0].logprob - entry.logprob) < 1e-4


def test_completions_stream_and_whole(client: Any) -> None:
    args = {"model": "m", "prompt": "Once upon a time", "max_tokens": 16, "temperature": 0.8, "seed": 7}
    whole = client.completions.create(**args)
    chunks = list(client.completions.create(stream=True, stream_options={"include_usage": True}, **args))
    streamed = "".join(c.choices[0].text for c in chunks if c.choices)
    assert whole.choices[0].text == streamed and streamed
    assert whole.usage.completion_tokens == chunks[-1].usage.completion_tokens == 16
    assert whole.usage.prompt_tokens == 4  # "Once", " upon", " a", " time"

    echoed = client.completions.create(echo=True, **args)
    assert echoed.choices[0].text == "Once upon a time" + whole.choices[0].text


def test_completions_with_several_prompts_and_logprobs(client: Any) -> None:
    out = client.completions.create(model="m", prompt=["Hello", "One two three"], max_tokens=5, temperature=0,
                                    logprobs=2)
    assert [c.index for c in out.choices] == [0, 1]
    assert out.usage.prompt_tokens == 1 + 3
    for choice in out.choices:
        assert len(choice.logprobs.tokens) == 5
        assert all(len(top) <= 2 for top in choice.logprobs.top_logprobs)


def test_models_health_metrics_and_docs(http: httpx.Client, client: Any, tiny_chat_model: Any) -> None:
    models = client.models.list()
    assert [m.id for m in models.data] == ["tiny-qwen"]
    assert http.get("/health").json() == {"status": "ok", "model": "tiny-qwen"}

    client.chat.completions.create(model="m", messages=MESSAGES, max_tokens=5, temperature=0)
    assert wait_until_idle(tiny_chat_model)
    metrics = http.get("/metrics").text
    for name in ("qwen_stream_time_to_first_token_seconds_bucket", "qwen_stream_inter_token_latency_seconds_count",
                 "qwen_stream_e2e_request_latency_seconds_sum", "qwen_stream_prompt_tokens_total",
                 "qwen_stream_generation_tokens_total"):
        assert name in metrics
    assert 'qwen_stream_requests_running{model="tiny-qwen"} 0.0' in metrics
    assert 'qwen_stream_requests_waiting{model="tiny-qwen"} 0.0' in metrics
    stats = tiny_chat_model.engine.stats()  # speculative decoding is on by default
    assert f'qwen_stream_speculative_draft_tokens{{model="tiny-qwen"}} {float(stats.drafted_tokens)}' in metrics
    assert 'qwen_stream_speculative_accepted_tokens{model="tiny-qwen"}' in metrics
    assert 'qwen_stream_speculative_acceptance_rate{model="tiny-qwen"}' in metrics
    assert http.get("/docs").status_code == 200
    assert "/v1/chat/completions" in http.get("/openapi.json").json()["paths"]


def test_two_apps_in_one_process_have_separate_metrics(tiny_chat_model: Any) -> None:
    from qwen_stream.server.app import create_app

    with LiveServer(create_app(tiny_chat_model, served_model_name="other", model_aliases=["m"])) as other, \
            httpx.Client(base_url=other.url) as http:
        assert 'qwen_stream_generation_tokens_total{model="other"}' not in http.get("/metrics").text


def test_raw_sse_frames(http: httpx.Client) -> None:
    body = {"messages": MESSAGES, "max_tokens": 3, "temperature": 0, "stream": True}
    with http.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        frames = [line for line in response.iter_lines() if line]
    assert all(frame.startswith("data: ") for frame in frames)
    assert frames[-1] == "data: [DONE]"
    assert '"delta":{"role":"assistant","content":""}' in frames[0]
    assert '"delta":{},"finish_reason":"length"' in frames[-2]


def test_usage_reports_the_cached_prefix_of_a_continued_conversation(client: Any, tiny_chat_model: Any) -> None:
    first_turn = [{"role": "user", "content": "Name three colours of the rainbow."}]
    first = client.chat.completions.create(model="m", messages=first_turn, max_tokens=8, temperature=0)
    answer = first.choices[0].message.content
    second_turn = [*first_turn, {"role": "assistant", "content": answer}, {"role": "user", "content": "And two more?"}]
    second = client.chat.completions.create(model="m", messages=second_turn, max_tokens=8, temperature=0)
    cached = second.usage.prompt_tokens_details.cached_tokens
    # the first turn's prompt is still in a slot's KV: only the rest of the conversation is prefilled
    assert prompt_tokens(tiny_chat_model, first_turn) - 1 <= cached < second.usage.prompt_tokens
    assert first.usage.prompt_tokens_details.cached_tokens < first.usage.prompt_tokens
