"""A real model calls a real tool: Qwen2.5-Coder-1.5B-Instruct (the default alias) asked for the weather in Paris
calls get_weather(city="Paris"), then answers from the tool's result; examples/tool_loop.py does the same loop."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qwen_stream.api import ChatModel
from tests.support.real_runners import HAS_LLAMA_CPP, QWEN_CODER, QWEN_CODER_RUNNER, TORCH_DTYPE

pytestmark = pytest.mark.slow

TOOLS = [{"type": "function", "function": {
    "name": "get_weather", "description": "Get the current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string", "description": "The city"}},
                   "required": ["city"]}}}]
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
MODEL = QWEN_CODER
RUNNERS = ["torch", pytest.param("llamacpp", marks=[pytest.mark.llamacpp, pytest.mark.skipif(
    not HAS_LLAMA_CPP, reason="llama-cpp-python is not installed")])]


@pytest.fixture(scope="module", params=RUNNERS)
def qwen(request: pytest.FixtureRequest) -> Iterator[ChatModel]:
    """The model on each runner: llama.cpp's is the session's shared one (tests/e2e/conftest.py); the PyTorch
    runner's is loaded here, in bfloat16 where the CPU computes it, else float32 (tests/support/real_runners.py)."""
    if request.param == "llamacpp":
        yield request.getfixturevalue("qwen_coder")
        return
    with ChatModel.load(MODEL, runner="torch", dtype=TORCH_DTYPE, max_batch_size=2, context_length=2048,
                        progress=False) as model:
        yield model


def _paris_call(calls: list[Any]) -> dict[str, Any]:
    assert [c.name for c in calls] == ["get_weather"], calls
    arguments = json.loads(calls[0].arguments)
    assert "paris" in arguments["city"].lower(), arguments
    return arguments


def test_the_model_calls_the_tool_then_answers_from_its_result(qwen: ChatModel) -> None:
    answer, _ = qwen.chat(messages=ASK, tools=TOOLS, temperature=0, max_new_tokens=100)
    _paris_call(answer.tool_calls)
    assert answer.finish_reason is not None and answer.finish_reason.value == "tool_calls"
    messages = [*ASK, answer.message(), {"role": "tool", "tool_call_id": answer.tool_calls[0].id,
                                         "content": json.dumps({"city": "Paris", "temperature_c": 18})}]
    # tool_choice "none": answer now (this 1.5B model otherwise tends to call the tool again)
    final, _ = qwen.chat(messages=messages, tools=TOOLS, tool_choice="none", temperature=0, max_new_tokens=60)
    assert not final.tool_calls and "18" in final, final


def test_a_required_call_is_streamed_in_pieces_that_join_to_it(qwen: ChatModel) -> None:
    events = list(qwen.stream(messages=ASK, tools=TOOLS, tool_choice="required", parallel_tool_calls=False,
                              temperature=0, max_new_tokens=100))
    arguments = _paris_call(events[-1].tool_calls)
    pieces = [d for e in events for d in e.tool_call_deltas]
    assert pieces[0].name == "get_weather" and len(pieces) > 2  # the arguments arrive as they are written
    assert json.loads("".join(d.arguments for d in pieces)) == arguments
    assert events[-1].text == ""


def test_the_tool_loop_example_runs() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "tool_loop.py"
    runner = [f"--{name}={value}" for name, value in QWEN_CODER_RUNNER.items()]  # llama.cpp where installed
    done = subprocess.run([sys.executable, str(example), MODEL, *runner], text=True, capture_output=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "-> get_weather({'city': 'Paris'})" in done.stdout and "Qwen: " in done.stdout, done.stdout


def test_a_tool_conversation_over_the_openai_client_never_leaks_a_call_as_content(qwen_coder: ChatModel) -> None:
    """Two turns as agent frameworks (openai-agents, pydantic-ai) drive them: tools stay offered after the result.
    Qwen2.5-Coder-1.5B then often calls again, as a bare JSON object (measured on this GGUF: greedy and sampled,
    `{"name": "weather", "arguments": {...}}`, fenced or not); whatever it writes, a call is never content."""
    pytest.importorskip("llama_cpp")
    openai = pytest.importorskip("openai")
    from qwen_stream.server.app import create_app
    from tests.support.live_server import LiveServer

    with LiveServer(create_app(qwen_coder)) as live:
        client = openai.OpenAI(base_url=f"{live.url}/v1", api_key="unused")
        messages: list[Any] = [{"role": "system", "content": "You are a helpful agent. Use tools when needed."}, *ASK]
        first = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, temperature=0)
        call = first.choices[0].message.tool_calls[0]
        assert call.function.name == "get_weather" and "paris" in call.function.arguments.lower()
        messages += [first.choices[0].message.model_dump(exclude_none=True),
                     {"role": "tool", "tool_call_id": call.id, "content": "Sunny, 22 C."}]
        for seed in (0, 1, 2):
            second = client.chat.completions.create(model=MODEL, messages=messages, tools=TOOLS, seed=seed,
                                                    temperature=0 if seed == 0 else 0.7, max_tokens=80)
            message = second.choices[0].message
            assert '"arguments"' not in (message.content or ""), message
            assert message.tool_calls or message.content, message
