"""Texts (or token ids) to embedding requests: the model's prompt for the input type, tokenizing with the model's
special tokens, the window (a 400, or cut when ``truncate`` allows), and the pooling the model asks for.

Every rule about what an embedding input may be lives here, for the Python API and every protocol: a list of 1 to
MAX_INPUTS inputs, no empty one, token ids inside the vocabulary, ``dimensions`` from 1 to the model's width.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qwen_stream.errors import ContextLengthError, InvalidParameterError
from qwen_stream.inputs.pooled_request import MAX_INPUTS, EmbeddingJob
from qwen_stream.inputs.request import EngineRequest, PromptInfo
from qwen_stream.models.embedding_style import INPUT_TYPES, EmbeddingStyle
from qwen_stream.types import POOLINGS, PoolingParams, SamplingParams

EmbedInput = str | Sequence[int]  # a text, or token ids taken as they are


@dataclass(frozen=True, slots=True)
class EmbedOptions:
    input_type: str | None = None  # "query" or "document": the model's prompt for that kind of text
    truncate: bool = False  # cut an input longer than the window (keeping its closing special tokens); else a 400
    dimensions: int | None = None  # keep the first n of each vector, re-normalised
    pooling: str | None = None  # None: the model's ("mean", "cls", "last")
    normalize: bool | None = None  # None: the model's
    prompt: str | None = None  # a prefix of the caller's own instead of the input type's


@dataclass(frozen=True, slots=True)
class EmbedTarget:
    """What the inputs are checked against: the model's tokenizer, style, window, vocabulary and width."""

    tokenizer: Any
    style: EmbeddingStyle
    window: int
    vocab_size: int
    width: int | None  # the vector's width, when the backend says it

    @property
    def limit(self) -> int:
        """The most tokens one input may have: the window, or less where the model was built for less."""
        return min(self.window, self.style.max_tokens or self.window)


def embedding_job(target: EmbedTarget, inputs: EmbedInput | Sequence[EmbedInput],
                  options: EmbedOptions) -> EmbeddingJob:
    items = check_inputs(inputs, "input")
    check_dimensions(options.dimensions, target.width)
    if options.input_type is not None and options.input_type not in INPUT_TYPES:
        raise InvalidParameterError("input_type", f"input_type must be one of {', '.join(INPUT_TYPES)}, "
                                                  f"got {options.input_type!r}")
    params = pooled_params(target.style, options.pooling, options.normalize)
    prefix = options.prompt if options.prompt is not None else target.style.prompt(options.input_type)
    requests = []
    for index, item in enumerate(items):
        ids, cut = input_ids(target, item, prefix, truncate=options.truncate, where=f"input[{index}]")
        requests.append(EngineRequest(ids, params, PromptInfo(len(ids), truncated=cut), prompt_index=index))
    return EmbeddingJob(requests, options.dimensions)


def check_inputs(inputs: EmbedInput | Sequence[EmbedInput], field: str) -> list[EmbedInput]:
    """One input or a list of 1 to MAX_INPUTS of them (a list of ints is one input of token ids)."""
    items: list[Any]
    if isinstance(inputs, str) or _is_ids(inputs):
        items = [inputs]
    elif isinstance(inputs, Sequence):
        items = list(inputs)
    else:
        raise InvalidParameterError(field, f"{field} must be a string, a list of strings or token ids")
    if not items:
        raise InvalidParameterError(field, f"{field} is empty: give at least one text")
    if len(items) > MAX_INPUTS:
        raise InvalidParameterError(field, f"{field} has {len(items)} items: at most {MAX_INPUTS} per request")
    for index, item in enumerate(items):
        if isinstance(item, (str, list, tuple)) and not item:
            raise InvalidParameterError(field, f"{field}[{index}] is empty: there is nothing to embed")
        if not isinstance(item, str) and not _is_ids(item):
            raise InvalidParameterError(field, f"{field}[{index}] must be a string or a list of token ids")
    return items


def check_dimensions(dimensions: int | None, width: int | None) -> None:
    if dimensions is None:
        return
    if isinstance(dimensions, bool) or not isinstance(dimensions, int) or dimensions < 1:
        raise InvalidParameterError("dimensions", f"dimensions must be an integer >= 1, got {dimensions!r}")
    if width is not None and dimensions > width:
        raise InvalidParameterError("dimensions", f"dimensions must be at most the model's {width}, "
                                                  f"got {dimensions}")


def pooled_params(style: EmbeddingStyle, pooling: str | None, normalize: bool | None) -> SamplingParams:
    """Parameters that say "pool, don't sample" as the model (or the caller) wants."""
    chosen = pooling or style.pooling
    if chosen not in POOLINGS:
        raise InvalidParameterError("pooling", f"pooling must be one of {', '.join(POOLINGS)}, got {chosen!r}")
    keep = style.normalize if normalize is None else normalize
    return SamplingParams(max_new_tokens=1, temperature=0.0, pooling=PoolingParams(chosen, keep))


def input_ids(target: EmbedTarget, item: EmbedInput, prefix: str, *, truncate: bool,
              where: str) -> tuple[list[int], bool]:
    """One input's token ids, and whether they were cut to fit."""
    limit = target.limit
    if isinstance(item, str):
        text = prefix + item
        if not truncate and len(text) > limit * _MAX_TOKEN_CHARS:  # too long whatever its tokens: say so unread
            raise ContextLengthError(f"{where} has {len(text)} characters: more than this model's {limit} tokens "
                                     "can hold; shorten it or ask for truncation", window=limit, param=where)
        ids = _encode(target, text, truncate)
    else:
        ids = [int(t) for t in item]
        bad = next((t for t in ids if not 0 <= t < target.vocab_size), None)
        if bad is not None:
            raise InvalidParameterError(where, f"{where}: token id {bad} is outside the model's vocabulary of "
                                               f"{target.vocab_size}")
    if len(ids) <= limit:
        return ids, False
    if not truncate:
        raise ContextLengthError(f"{where} has {len(ids)} tokens but this model embeds at most {limit}; "
                                 "shorten it or ask for truncation", window=limit, prompt_tokens=len(ids), param=where)
    keep_end = _closing_specials(target) if isinstance(item, str) else 0
    return ids[:limit - keep_end] + (ids[len(ids) - keep_end:] if keep_end else []), True


def _encode(target: EmbedTarget, text: str, truncate: bool) -> list[int]:
    tokenizer, style = target.tokenizer, target.style
    if truncate:  # a window's worth of characters is at least a window's worth of tokens: never tokenize more
        text = text[:target.limit * _MAX_TOKEN_CHARS]
    ids = list(tokenizer(text, add_special_tokens=True, verbose=False)["input_ids"])
    eos = _eos_id(tokenizer) if style.append_eos else None
    if eos is not None and (not ids or ids[-1] != eos):
        ids.append(eos)
    return ids


# No token of the tokenizers we serve covers more characters than this (Qwen's longest is 256 bytes).
_MAX_TOKEN_CHARS = 256


def _closing_specials(target: EmbedTarget) -> int:
    """How many special tokens close an encoded text ([SEP] for BERT, the eos for Qwen3-Embedding): cutting keeps
    them at the end, as the tokenizers' own truncation does."""
    tokenizer = target.tokenizer
    plain = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    full = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    after = len(full) - len(plain) - next((i for i in range(len(full)) if full[i:i + len(plain)] == plain), 0)
    return max(0, after) + (1 if target.style.append_eos and _eos_id(tokenizer) not in full else 0)


def _eos_id(tokenizer: Any) -> int | None:
    token_id = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    if isinstance(token_id, int) and tokenizer.convert_ids_to_tokens(token_id) == "<|endoftext|>":
        return token_id
    eos = getattr(tokenizer, "eos_token_id", None)
    return eos if isinstance(eos, int) else None


def _is_ids(value: Any) -> bool:
    return (isinstance(value, Sequence) and not isinstance(value, str) and bool(value)
            and all(isinstance(t, int) and not isinstance(t, bool) for t in value))
