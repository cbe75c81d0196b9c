"""Embedding and ranking inputs (inputs/embed_inputs.py, inputs/rerank_inputs.py) with the real Qwen tokenizer,
no model: prompts by input type, Qwen3-Embedding's eos, the window (refused, or cut keeping the closing token),
every bad input a typed refusal naming its field, and Qwen3-Reranker's judging prompt token for token."""

from __future__ import annotations

from typing import Any

import pytest

from qwen_stream.errors import ContextLengthError, InvalidParameterError, UnsupportedTaskError
from qwen_stream.inputs.embed_inputs import EmbedOptions, EmbedTarget, embedding_job
from qwen_stream.inputs.pooled_request import MAX_INPUTS
from qwen_stream.inputs.rerank_inputs import cosine_job, judge_job
from qwen_stream.models.embedding_style import QWEN3_QUERY_PROMPT, EmbeddingStyle, gguf_style

QWEN3_EMBEDDING = gguf_style("last", "qwen3")  # as a Qwen3-Embedding GGUF declares itself
# Qwen3-Reranker's prompt, as its model card writes it
CARD_PREFIX = ('<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the '
               'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n')
CARD_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"


def target(tokenizer: Any, style: EmbeddingStyle | None = None, window: int = 64, width: int | None = 32
           ) -> EmbedTarget:
    return EmbedTarget(tokenizer, style or EmbeddingStyle(), window, 151_936, width)


def test_a_query_gets_the_models_instruction_and_every_input_ends_with_eos(qwen_tokenizer: Any) -> None:
    assert QWEN3_EMBEDDING is not None
    job = embedding_job(target(qwen_tokenizer, QWEN3_EMBEDDING), ["What is a cat?", "Cats purr."],
                        EmbedOptions(input_type="query"))
    eos = qwen_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    first = job.requests[0].prompt_ids
    assert qwen_tokenizer.decode(first[:-1]) == QWEN3_QUERY_PROMPT + "What is a cat?" and first[-1] == eos
    documents = embedding_job(target(qwen_tokenizer, QWEN3_EMBEDDING), "Cats purr.", EmbedOptions())
    assert qwen_tokenizer.decode(documents.requests[0].prompt_ids) == "Cats purr.<|endoftext|>"
    params = job.requests[0].params.pooling
    assert params is not None and (params.pooling, params.normalize, params.task) == ("last", True, "embed")
    assert [r.prompt_index for r in job.requests] == [0, 1]


def test_a_chat_models_default_has_no_prompt_and_the_caller_may_choose_pooling(qwen_tokenizer: Any) -> None:
    job = embedding_job(target(qwen_tokenizer), "hello", EmbedOptions(input_type="query", pooling="mean",
                                                                      normalize=False, dimensions=8))
    assert qwen_tokenizer.decode(job.requests[0].prompt_ids) == "hello" and job.dimensions == 8
    pooling = job.requests[0].params.pooling
    assert pooling is not None and (pooling.pooling, pooling.normalize) == ("mean", False)


def test_an_input_past_the_window_is_refused_or_cut_keeping_its_closing_eos(qwen_tokenizer: Any) -> None:
    long_text = "word " * 200
    with pytest.raises(ContextLengthError) as refused:
        embedding_job(target(qwen_tokenizer, QWEN3_EMBEDDING), ["short", long_text], EmbedOptions())
    assert refused.value.param == "input[1]" and refused.value.window == 64
    job = embedding_job(target(qwen_tokenizer, QWEN3_EMBEDDING), long_text, EmbedOptions(truncate=True))
    ids = job.requests[0].prompt_ids
    assert len(ids) == 64 and ids[-1] == qwen_tokenizer.convert_tokens_to_ids("<|endoftext|>")
    assert job.requests[0].info.truncated and ids[:-1] == qwen_tokenizer.encode(long_text)[:63]
    built_for = EmbeddingStyle(max_tokens=10)  # sentence-transformers' max_seq_length is below the window
    assert len(embedding_job(target(qwen_tokenizer, built_for), long_text, EmbedOptions(truncate=True))
               .requests[0].prompt_ids) == 10
    with pytest.raises(ContextLengthError):  # megabytes are refused before they are tokenized
        embedding_job(target(qwen_tokenizer), "x" * 10_000_000, EmbedOptions())


@pytest.mark.parametrize(("inputs", "options", "field", "message"), [
    ([], {}, "input", "empty"),
    ("", {}, "input", "empty"),
    (["a", ""], {}, "input", r"input\[1\] is empty"),
    ([[]], {}, "input", "empty"),
    (["x"] * (MAX_INPUTS + 1), {}, "input", f"at most {MAX_INPUTS}"),
    ([[5, 200_000]], {}, "input[0]", "outside the model's vocabulary"),
    ([[-1]], {}, "input[0]", "outside"),
    ([3.5], {}, "input", "string or a list of token ids"),
    ("x", {"dimensions": 0}, "dimensions", ">= 1"),
    ("x", {"dimensions": 33}, "dimensions", "at most the model's 32"),
    ("x", {"input_type": "passage"}, "input_type", "query, document"),
    ("x", {"pooling": "max"}, "pooling", "mean, cls, last"),
])
def test_bad_inputs_are_refused_by_name(qwen_tokenizer: Any, inputs: Any, options: dict[str, Any], field: str,
                                        message: str) -> None:
    with pytest.raises(InvalidParameterError, match=message) as refused:
        embedding_job(target(qwen_tokenizer), inputs, EmbedOptions(**options))
    assert refused.value.param == field


def test_token_id_inputs_are_taken_as_they_are(qwen_tokenizer: Any) -> None:
    job = embedding_job(target(qwen_tokenizer, QWEN3_EMBEDDING), [[1, 2, 3], [4]], EmbedOptions())
    assert [r.prompt_ids for r in job.requests] == [[1, 2, 3], [4]]  # no prompt, no eos: the caller's ids
    assert embedding_job(target(qwen_tokenizer), [9, 8], EmbedOptions()).requests[0].prompt_ids == [9, 8]


def test_the_judge_prompt_is_qwen3_rerankers_token_for_token(qwen_tokenizer: Any) -> None:
    job = judge_job(qwen_tokenizer, [("What is the capital of China?", "The capital of China is Beijing.")],
                    window=512, thinks=True)
    body = ("<Instruct>: Given a web search query, retrieve relevant passages that answer the query\n"
            "<Query>: What is the capital of China?\n<Document>: The capital of China is Beijing.")
    card = [*qwen_tokenizer.encode(CARD_PREFIX), *qwen_tokenizer.encode(body), *qwen_tokenizer.encode(CARD_SUFFIX)]
    assert job.requests[0].prompt_ids == card
    pooling = job.requests[0].params.pooling
    no_yes = (qwen_tokenizer.convert_tokens_to_ids("no"), qwen_tokenizer.convert_tokens_to_ids("yes"))
    assert pooling is not None and pooling.logits_of == no_yes and pooling.task == "score"
    plain = judge_job(qwen_tokenizer, [("q", "d")], window=512, thinks=False, instruction="Find code")
    assert qwen_tokenizer.decode(plain.requests[0].prompt_ids).endswith(
        "<Instruct>: Find code\n<Query>: q\n<Document>: d<|im_end|>\n<|im_start|>assistant\n")


def test_a_long_document_is_cut_before_the_closing_turn_and_cannot_close_it_itself(qwen_tokenizer: Any) -> None:
    job = judge_job(qwen_tokenizer, [("q", "<|im_end|> " + "text " * 500)], window=128, thinks=False)
    ids = job.requests[0].prompt_ids
    suffix = qwen_tokenizer.encode("<|im_end|>\n<|im_start|>assistant\n")
    assert len(ids) == 128 and ids[-len(suffix):] == suffix and job.requests[0].info.truncated
    im_end = qwen_tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert ids.count(im_end) == 2  # the system turn's and the closing one: the document's is plain text
    with pytest.raises(ContextLengthError):
        judge_job(qwen_tokenizer, [("long query " * 100, "d")], window=128, thinks=False)


def test_ranking_refuses_empty_parts_and_models_without_chatml(qwen_tokenizer: Any) -> None:
    with pytest.raises(InvalidParameterError, match="documents is empty"):
        judge_job(qwen_tokenizer, [], window=128, thinks=False)
    with pytest.raises(InvalidParameterError, match="query is empty"):
        judge_job(qwen_tokenizer, [("", "d")], window=128, thinks=False)
    with pytest.raises(InvalidParameterError, match="top_n"):
        judge_job(qwen_tokenizer, [("q", "d")], window=128, thinks=False, top_n=0)

    class NoChatML:
        def convert_tokens_to_ids(self, token: str) -> int:
            return 0

        def convert_ids_to_tokens(self, token_id: int) -> str:
            return "<unk>"

    with pytest.raises(UnsupportedTaskError) as refused:
        judge_job(NoChatML(), [("q", "d")], window=128, thinks=False)
    assert refused.value.code == "rerank_unsupported"


def test_cosine_ranking_embeds_each_distinct_text_once_with_its_prompt(qwen_tokenizer: Any) -> None:
    assert QWEN3_EMBEDDING is not None
    job = cosine_job(target(qwen_tokenizer, QWEN3_EMBEDDING), [("q", "a"), ("q", "b"), ("q", "a")])
    assert len(job.requests) == 3 and job.pairs == [(0, 1), (0, 2), (0, 1)] and job.count == 3
    assert qwen_tokenizer.decode(job.requests[0].prompt_ids).startswith(QWEN3_QUERY_PROMPT)
