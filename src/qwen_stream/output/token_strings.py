"""Token ids to the text and bytes each token stands for alone, as logprobs report them (cached per model)."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from qwen_stream.output.detokenizer import token_bytes_table


class TokenStrings:
    """Token id -> (text, UTF-8 bytes) for logprobs; a token that is part of a character gets U+FFFD text."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.lookup = lru_cache(maxsize=65536)(self._lookup)

    def _lookup(self, token_id: int) -> tuple[str, bytes]:
        raw = _raw_token_bytes(self._tokenizer, token_id)
        return raw.decode("utf-8", errors="replace"), raw

    def text(self, token_id: int) -> str:
        return self.lookup(token_id)[0]


def _raw_token_bytes(tokenizer: Any, token_id: int) -> bytes:
    """The token's bytes from the output layer's table (specials as their text); decode() where it has none."""
    table = token_bytes_table(tokenizer).with_special
    if 0 <= token_id < len(table) and table[token_id]:
        return table[token_id]
    return str(tokenizer.decode([token_id], skip_special_tokens=False)).encode()
