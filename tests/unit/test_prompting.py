"""History normalization and prompt folding, with the real Qwen tokenizer (no model)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from transformers import PreTrainedTokenizerFast

from qwen_stream.models.prompting import ChatPrompter, make_messages, normalize_history, render_chatml

PAIRS = [("你好", "你好！有什么可以帮你的吗？"), ("What is 2+2?", "4")]


def test_none_history_is_empty() -> None:
    assert normalize_history(None) == []
    assert normalize_history([]) == []


def test_pairs_as_tuples_or_lists_become_user_assistant_messages() -> None:
    expected = [
        {"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！有什么可以帮你的吗？"},
        {"role": "user", "content": "What is 2+2?"}, {"role": "assistant", "content": "4"},
    ]
    assert normalize_history(PAIRS) == expected
    assert normalize_history([list(p) for p in PAIRS]) == expected


def test_openai_messages_with_text_parts() -> None:
    history = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": [{"type": "text", "text": "line one"}, {"type": "text", "text": "line two"}]},
        {"role": "assistant", "content": None, "tool_calls": []},
    ]
    assert normalize_history(history) == [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "line one\nline two"},
        {"role": "assistant", "content": ""},
    ]


@pytest.mark.parametrize(("history", "error", "match"), [
    ("hello", TypeError, "history must be"),
    ([("only one",)], TypeError, r"history\[0\]"),
    ([("q", "r", "extra")], TypeError, r"history\[0\]"),
    ([("q", 3)], TypeError, "must be a string"),
    ([{"role": "wizard", "content": "hi"}], ValueError, "role 'wizard'"),
    ([{"role": "user", "content": 42}], TypeError, "must be a string"),
    ([{"role": "user", "content": None}], TypeError, "must be a string"),
    ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], ValueError, "only text"),
    (42, TypeError, "history must be"),
])
def test_bad_history_raises_clearly(history: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        normalize_history(history)


def test_make_messages_puts_system_first_and_query_last() -> None:
    history = [{"role": "system", "content": "old"}, *normalize_history(PAIRS[:1])]
    messages = make_messages("next?", history, system="new")
    assert messages[0] == {"role": "system", "content": "new"}
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[-1]["content"] == "next?"
    with pytest.raises(ValueError, match="nothing to answer"):
        make_messages(None, None)


def test_pairs_and_messages_give_the_same_prompt(qwen_tokenizer: Any) -> None:
    prompter = ChatPrompter(qwen_tokenizer)
    from_pairs = prompter.build(make_messages("再见", PAIRS), max_prompt_tokens=1000)
    as_messages = [*normalize_history(PAIRS), {"role": "user", "content": "再见"}]
    from_messages = prompter.build(as_messages, max_prompt_tokens=1000)
    assert from_pairs.ids == from_messages.ids
    assert from_pairs.dropped_turns == 0
    assert from_pairs.text.endswith("<|im_start|>user\n再见<|im_end|>\n<|im_start|>assistant\n")
    assert from_pairs.ids[-3:] == qwen_tokenizer("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    assert from_pairs.ids.count(151644) == 7  # <|im_start|>: system, 2 x (user, assistant), user, assistant


def _long_conversation(turns: int) -> list[dict[str, str]]:
    history = [(f"question number {i} " + "blah " * 20, f"answer number {i} " + "yes " * 20) for i in range(turns)]
    return make_messages("the final question", history, system="You are a careful assistant.")


def test_folding_drops_the_oldest_turns_and_keeps_system_and_query(qwen_tokenizer: Any) -> None:
    prompter = ChatPrompter(qwen_tokenizer)
    messages = _long_conversation(10)
    full = prompter.build(messages, max_prompt_tokens=100_000)
    limit = full.num_tokens // 2
    folded = prompter.build(messages, max_prompt_tokens=limit)
    assert folded.num_tokens <= limit
    assert 0 < folded.dropped_turns < 10
    assert "You are a careful assistant." in folded.text
    assert "the final question" in folded.text
    assert "question number 0 " not in folded.text  # the oldest went first
    assert "question number 9 " in folded.text  # the newest history turn survives a halving
    # it drops as few turns as it can: keeping one more turn would not fit
    kept_one_more = messages[:1] + messages[1 + 2 * (folded.dropped_turns - 1):]
    assert prompter.build(kept_one_more, max_prompt_tokens=100_000).num_tokens > limit


def test_folding_renders_logarithmically_many_times(qwen_tokenizer: Any) -> None:
    class CountingPrompter(ChatPrompter):
        renders = 0

        def render(self, messages: list[dict[str, str]]) -> str:
            CountingPrompter.renders += 1
            return super().render(messages)

    prompter = CountingPrompter(qwen_tokenizer)
    messages = _long_conversation(64)
    prompter.build(messages, max_prompt_tokens=300)
    assert CountingPrompter.renders <= 2 + math.ceil(math.log2(64)) + 1


def test_a_query_that_cannot_fit_raises_with_sizes(qwen_tokenizer: Any) -> None:
    prompter = ChatPrompter(qwen_tokenizer)
    messages = make_messages("word " * 500, PAIRS)
    with pytest.raises(ValueError, match=r"take \d+ tokens, but the limit is 100"):
        prompter.build(messages, max_prompt_tokens=100)


@pytest.mark.parametrize("limit", [0, -5, 1.5, True])
def test_bad_limit_raises(qwen_tokenizer: Any, limit: Any) -> None:
    with pytest.raises(ValueError, match="max_prompt_tokens"):
        ChatPrompter(qwen_tokenizer).build(make_messages("hi"), max_prompt_tokens=limit)


def test_only_a_system_prompt_raises(qwen_tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="only a system prompt"):
        ChatPrompter(qwen_tokenizer).build([{"role": "system", "content": "x"}], max_prompt_tokens=100)


def test_default_system_is_used_when_the_conversation_has_none(qwen_tokenizer: Any) -> None:
    prompter = ChatPrompter(qwen_tokenizer, default_system="Answer in French.")
    result = prompter.build(make_messages("hello"), max_prompt_tokens=100)
    assert result.text.startswith("<|im_start|>system\nAnswer in French.<|im_end|>\n")
    explicit = prompter.build(make_messages("hello", system="Answer in German."), max_prompt_tokens=100)
    assert "French" not in explicit.text and "German" in explicit.text


def test_without_a_chat_template_chatml_is_written_like_make_context(qwen_tokenizer: Any) -> None:
    # a separate tokenizer object: the shared one must not lose its template
    bare = PreTrainedTokenizerFast(tokenizer_object=qwen_tokenizer.backend_tokenizer)
    prompter = ChatPrompter(bare)
    assert not prompter.has_template
    result = prompter.build(make_messages("你好", [("hi", "hello")]), max_prompt_tokens=200)
    expected = ("<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
                "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n"
                "<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n")
    assert result.text == expected
    assert result.ids == qwen_tokenizer(expected, add_special_tokens=False)["input_ids"]
    assert render_chatml([{"role": "system", "content": "S"}, {"role": "user", "content": "u"}]).startswith(
        "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nu")
