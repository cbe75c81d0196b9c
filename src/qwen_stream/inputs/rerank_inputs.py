"""A query and documents to ranking requests, two ways.

``judge`` (a chat model): Qwen3-Reranker's own prompt per document (its model card): a system turn that asks for a
yes/no judgement, ``<Instruct>: ...\\n<Query>: ...\\n<Document>: ...`` as the user turn, the assistant's turn opened
(with an empty ``<think>`` block where the template thinks), and the score is P("yes") from the ("no", "yes")
logits at the last position. Qwen3-Reranker itself scores this way, and any ChatML model (every Qwen chat model)
can judge the same prompt. A document too long for the window is cut; a query that alone leaves no room is a 400.

``cosine`` (an embedding model): the query embedded with the model's query prompt, each document with its document
prompt; the score is their cosine. Both score (query, document) pairs: rerank pairs one query with every document,
vLLM's ``/score`` pairs text_1 with text_2 element by element.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qwen_stream.errors import ContextLengthError, InvalidParameterError, UnsupportedTaskError
from qwen_stream.inputs.embed_inputs import EmbedTarget, input_ids, pooled_params
from qwen_stream.inputs.pooled_request import MAX_INPUTS, RankingJob
from qwen_stream.inputs.request import EngineRequest, PromptInfo
from qwen_stream.types import PoolingParams, SamplingParams

JUDGE_SYSTEM = ('Judge whether the Document meets the requirements based on the Query and the Instruct provided. '
                'Note that the answer can only be "yes" or "no".')
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"
_OPEN, _CLOSE = "<|im_start|>", "<|im_end|>"


Pair = tuple[str, str]  # (query, document)


def judge_job(tokenizer: Any, pairs: Sequence[Pair], *, window: int, thinks: bool, instruction: str | None = None,
              top_n: int | None = None, sort: bool = True) -> RankingJob:
    """One score request per (query, document) pair, in pair order (see the module docstring)."""
    _check(pairs, top_n)
    no_id, yes_id = _token(tokenizer, "no"), _token(tokenizer, "yes")
    if _token(tokenizer, _OPEN) is None or _token(tokenizer, _CLOSE) is None or no_id is None or yes_id is None:
        raise UnsupportedTaskError("this model cannot rerank: judging needs a ChatML chat model (<|im_start|>, "
                                   "<|im_end|>) with \"yes\" and \"no\" tokens", code="rerank_unsupported")
    prefix = _encode(tokenizer, f"{_OPEN}system\n{JUDGE_SYSTEM}{_CLOSE}\n{_OPEN}user\n", special=True)
    suffix = _encode(tokenizer, f"{_CLOSE}\n{_OPEN}assistant\n" + ("<think>\n\n</think>\n\n" if thinks else ""),
                     special=True)
    room = window - len(prefix) - len(suffix)  # for the user turn's text: its end is cut, as the model card does
    params = SamplingParams(max_new_tokens=1, temperature=0.0, pooling=PoolingParams(logits_of=(no_id, yes_id)))
    requests = []
    for index, (query, doc) in enumerate(pairs):
        head = f"<Instruct>: {instruction or DEFAULT_INSTRUCTION}\n<Query>: {query}\n<Document>: "
        if len(_encode(tokenizer, head)) >= room:
            raise ContextLengthError(f"the query and the judging prompt leave no room for a document in the "
                                     f"context window of {window}", window=window, param="query")
        body = _encode(tokenizer, head + doc)  # one text, tokenized whole as the model card tokenizes it
        ids = [*prefix, *body[:room], *suffix]
        requests.append(EngineRequest(ids, params, PromptInfo(len(ids), truncated=len(body) > room),
                                      prompt_index=index))
    return RankingJob(requests, "judge", [], top_n, sort)


def cosine_job(target: EmbedTarget, pairs: Sequence[Pair], *, top_n: int | None = None,
               sort: bool = True) -> RankingJob:
    """An embedding per distinct text (queries with the model's query prompt, documents with its document
    prompt and cut to fit the window), all normalised; each pair compares two of them."""
    _check(pairs, top_n)
    params = pooled_params(target.style, None, True)
    requests: list[EngineRequest] = []
    seen: dict[tuple[str, str], int] = {}

    def request(text: str, kind: str, where: str) -> int:
        if (text, kind) not in seen:
            ids, cut = input_ids(target, text, target.style.prompt(kind), truncate=kind == "document", where=where)
            seen[(text, kind)] = len(requests)
            requests.append(EngineRequest(ids, params, PromptInfo(len(ids), truncated=cut),
                                          prompt_index=len(requests)))
        return seen[(text, kind)]

    indices = [(request(q, "query", "query"), request(d, "document", f"documents[{i}]"))
               for i, (q, d) in enumerate(pairs)]
    return RankingJob(requests, "cosine", indices, top_n, sort)


def _check(pairs: Sequence[Pair], top_n: int | None) -> None:
    if not pairs:
        raise InvalidParameterError("documents", "documents is empty: give at least one document to rank")
    if len(pairs) > MAX_INPUTS:
        raise InvalidParameterError("documents", f"{len(pairs)} documents: at most {MAX_INPUTS} per request")
    for index, (query, doc) in enumerate(pairs):
        if not isinstance(query, str) or not query:
            raise InvalidParameterError("query", "query is empty: there is nothing to rank against")
        if not isinstance(doc, str) or not doc:
            raise InvalidParameterError("documents", f"documents[{index}] is empty or not a string")
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 1):
        raise InvalidParameterError("top_n", f"top_n must be an integer >= 1, got {top_n!r}")


def _encode(tokenizer: Any, text: str, *, special: bool = False) -> list[int]:
    """Token ids of ``text``; a user's text never becomes special tokens (a document cannot close the turn)."""
    if special:
        return list(tokenizer.encode(text, add_special_tokens=False))
    return list(tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"])


def _token(tokenizer: Any, token: str) -> int | None:
    token_id = tokenizer.convert_tokens_to_ids(token)
    if isinstance(token_id, int) and tokenizer.convert_ids_to_tokens(token_id) == token:
        return token_id
    return None
