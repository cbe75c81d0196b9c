"""The input processor on the real Qwen tokenizer and its real chat template, with no engine: what each kind of
request becomes, and the refusals it raises as types."""

from __future__ import annotations

from typing import Any

import pytest

from qwen_stream.errors import ContextLengthError, InvalidParameterError, UnsupportedTaskError
from qwen_stream.inputs.answer_length import LengthPolicy
from qwen_stream.inputs.fim import FimInput
from qwen_stream.inputs.processor import InputProcessor
from qwen_stream.types import SamplingParams

WINDOW = 256
DEFAULTS = SamplingParams(temperature=0.7, top_p=0.8, max_new_tokens=64)
SERVER = LengthPolicy(rest_of_window=True)


@pytest.fixture(scope="module")
def inputs(qwen_tokenizer: Any) -> InputProcessor:
    return InputProcessor(qwen_tokenizer, name="tiny", context_length=WINDOW, vocab_size=len(qwen_tokenizer),
                          default_params=DEFAULTS, eos_token_ids=[151643, 151645])


def ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_a_chat_is_its_templated_prompt_with_the_model_defaults(inputs: InputProcessor) -> None:
    [request] = inputs.chat(ask("Hello"), seed=5)
    expected = inputs.prompter.build(ask("Hello"), max_prompt_tokens=WINDOW - 64)
    assert request.prompt_ids == expected.ids
    assert request.info.num_tokens == len(expected.ids) and request.info.dropped_turns == 0
    assert (request.params.temperature, request.params.top_p, request.params.seed) == (0.7, 0.8, 5)
    assert request.params.max_new_tokens == 64  # the usual length: the Python API's policy
    assert request.counts_prompt and request.prompt_index == 0


def test_n_choices_share_the_prompt_and_count_it_once(inputs: InputProcessor) -> None:
    requests = inputs.chat(ask("Hello"), n=3, seed=10)
    assert [r.params.seed for r in requests] == [10, 11, 12]
    assert [r.counts_prompt for r in requests] == [True, False, False]
    assert all(r.prompt_ids == requests[0].prompt_ids for r in requests)


def test_a_server_answer_takes_the_rest_of_the_window_unless_capped(inputs: InputProcessor) -> None:
    [free] = inputs.chat(ask("Hello"), policy=SERVER)
    assert free.params.max_new_tokens == WINDOW - free.info.num_tokens
    [capped] = inputs.chat(ask("Hello"), policy=LengthPolicy(rest_of_window=True, cap=7))
    assert capped.params.max_new_tokens == 7
    [asked] = inputs.chat(ask("Hello"), policy=SERVER, max_new_tokens=20)
    assert asked.params.max_new_tokens == 20


def test_history_is_folded_to_leave_the_answer_its_room(inputs: InputProcessor) -> None:
    turns = [m for i in range(40) for m in ({"role": "user", "content": f"question {i} " * 3},
                                             {"role": "assistant", "content": f"answer {i} " * 3})]
    [request] = inputs.chat([*turns, *ask("Last one?")], max_new_tokens=100)
    assert request.info.dropped_turns > 0 and request.info.num_tokens <= WINDOW - 100


def test_completions_continue_raw_text_or_ids_each_with_its_own_room(inputs: InputProcessor) -> None:
    text_ids = list(inputs.tokenizer.encode("def add(a, b):", add_special_tokens=False))
    requests = inputs.completion(["def add(a, b):", [1, 2, 3]], n=2, policy=SERVER)
    assert [r.prompt_index for r in requests] == [0, 0, 1, 1]
    assert requests[0].prompt_ids == text_ids and requests[2].prompt_ids == [1, 2, 3]
    assert requests[0].params.max_new_tokens == WINDOW - len(text_ids)
    assert requests[2].params.max_new_tokens == WINDOW - 3
    assert [r.counts_prompt for r in requests] == [True, False, True, False]


def test_response_format_becomes_a_compiled_constraint(inputs: InputProcessor) -> None:
    [request] = inputs.chat(ask("JSON please"), response_format={"type": "json_object"})
    assert request.params.constraint is not None


def test_refusals_are_typed(inputs: InputProcessor) -> None:
    with pytest.raises(ContextLengthError) as too_long:
        inputs.chat(ask("word " * 400), max_new_tokens=10)
    assert too_long.value.prompt_tokens is not None and too_long.value.prompt_tokens > WINDOW - 10
    with pytest.raises(ContextLengthError) as no_room:
        inputs.completion(["hi"], max_new_tokens=WINDOW)
    assert no_room.value.window == WINDOW and no_room.value.param == "max_tokens"
    with pytest.raises(InvalidParameterError) as bias:
        inputs.params(logit_bias={10**7: 1.0})
    assert bias.value.param == "logit_bias"
    with pytest.raises(UnsupportedTaskError) as fim:  # this tokenizer has no FIM tokens
        inputs.fim([FimInput("def f(", "):")])
    assert fim.value.code == "fim_not_supported"
    with pytest.raises(ValueError, match="nothing to answer"):
        inputs.chat([{"role": "system", "content": "Be brief."}])


def test_a_chat_counts_its_tokens_whole(inputs: InputProcessor) -> None:
    turns = [m for i in range(40) for m in ({"role": "user", "content": f"question {i}"},
                                             {"role": "assistant", "content": f"answer {i}"})]
    whole = inputs.prompter.build([*turns, *ask("?")], max_prompt_tokens=2**62)
    assert inputs.count_chat_tokens([*turns, *ask("?")]) == whole.num_tokens > WINDOW
