"""The wire format without a model: request validation, error descriptions, SSE framing, metrics."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from qwen_stream.server.metrics import ServerMetrics
from qwen_stream.server.protocols.openai.protocol import Usage
from qwen_stream.server.protocols.openai.requests import ChatCompletionRequest, CompletionRequest
from qwen_stream.server.wire.errors import describe_validation_errors
from qwen_stream.server.wire.sse import DONE, sse_frame
from qwen_stream.types import FinishReason, StreamEvent


def test_chat_request_reads_openai_fields_and_ignores_unknown_ones() -> None:
    req = ChatCompletionRequest.model_validate({
        "messages": [{"role": "developer", "content": [{"type": "text", "text": "Be "}, {"type": "text", "text": "brief"}]},
                     {"role": "user", "content": "hi"}],
        "max_completion_tokens": 7, "max_tokens": 3, "logprobs": True, "top_logprobs": 2,
        "stream_options": {"include_usage": True}, "tools": [], "parallel_tool_calls": False,
    })
    assert [m.as_dict() for m in req.messages] == [{"role": "system", "content": "Be brief"},
                                                   {"role": "user", "content": "hi"}]
    fields = req.sampling()
    assert (fields.max_tokens, fields.logprobs, req.include_usage, req.n) == (7, 2, True, 1)
    assert ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "x"}]}).sampling().logprobs is None


@pytest.mark.parametrize("bad", [{"max_tokens": "5"}, {"stream": 1}, {"temperature": "0.5"}, {"n": 1.0}])
def test_requests_are_strict_about_types(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ChatCompletionRequest.model_validate({"messages": [{"role": "user", "content": "x"}], **bad})


def test_completion_request_prompts() -> None:
    assert CompletionRequest.model_validate({"prompt": "a"}).prompts == ["a"]
    assert CompletionRequest.model_validate({"prompt": ["a", "b"]}).prompts == ["a", "b"]


def test_validation_errors_become_one_readable_message() -> None:
    with pytest.raises(ValidationError) as info:
        ChatCompletionRequest.model_validate({"messages": [], "max_tokens": 0})
    message, param = describe_validation_errors(info.value.errors())
    assert param in {"messages", "max_tokens"}  # the first one reported
    assert "messages:" in message and "max_tokens:" in message
    message, param = describe_validation_errors([{"type": "json_invalid", "loc": ("body", 3),
                                                  "ctx": {"error": "Expecting value"}}])
    assert (message, param) == ("malformed JSON body: Expecting value", None)


def test_sse_frames() -> None:
    assert sse_frame(Usage(prompt_tokens=1)) == (b'data: {"prompt_tokens":1,"completion_tokens":0,"total_tokens":0,'
                                                 b'"prompt_tokens_details":{"cached_tokens":0}}\n\n')
    assert DONE == b"data: [DONE]\n\n"


def test_metrics_follow_a_request() -> None:
    metrics = ServerMetrics("m")
    tracker = metrics.tracker("/v1/chat/completions")
    for n, elapsed in ((1, 0.5), (2, 0.6), (4, 0.8)):
        tracker.observe(StreamEvent(delta="x", text="x" * n, token_ids=[1], num_generated_tokens=n, elapsed_s=elapsed,
                                    time_to_first_token_s=0.5, num_prompt_tokens=9,
                                    finish_reason=FinishReason.LENGTH if n == 4 else None))
    tracker.close()  # after a finish: not counted as an abort
    text = metrics.render().decode()
    assert 'qwen_stream_time_to_first_token_seconds_count{model="m",route="/v1/chat/completions"} 1.0' in text
    assert 'qwen_stream_inter_token_latency_seconds_count{model="m",route="/v1/chat/completions"} 3.0' in text  # 1 + 2 tokens after the first
    assert 'qwen_stream_generation_tokens_total{model="m",route="/v1/chat/completions"} 4.0' in text
    assert 'qwen_stream_prompt_tokens_total{model="m",route="/v1/chat/completions"} 9.0' in text
    assert 'qwen_stream_requests_total{finish_reason="length",model="m",route="/v1/chat/completions"} 1.0' in text
    assert 'finish_reason="abort"' not in text
