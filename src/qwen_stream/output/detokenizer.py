"""Token ids to text, one token at a time, O(1) work per token and never half a UTF-8 character.

Decoding the whole answer again after every token (what ``TextIteratorStreamer`` does) costs O(n) per token.
Instead we precompute, once per tokenizer, the raw bytes every token id stands for, and feed those bytes to an
incremental UTF-8 decoder: it holds back the first bytes of a character whose last byte has not arrived yet (an
emoji is often three byte-level tokens), so no U+FFFD ever appears mid-stream.

Three kinds of tokenizers are understood by reading their ``tokenizers`` decoder:
- byte-level BPE (GPT-2, Qwen, Llama 3, SmolLM2): each vocab character stands for one byte;
- SentencePiece style (``▁`` for a space, ``<0xNN>`` byte-fallback tokens, one leading space stripped);
- anything else: a bounded window of ids is re-decoded with ``tokenizer.decode`` (vLLM's prefix/read offsets),
  still O(1) per token because the window never grows past a few tokens.
"""

from __future__ import annotations

import codecs
import json
import re
import threading
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

__all__ = ["IncrementalDetokenizer", "TokenBytes", "token_bytes_table"]

DecoderKind = Literal["byte_level", "sentencepiece", "window"]


@dataclass(frozen=True, slots=True)
class TokenBytes:
    """What every token id of one tokenizer stands for, as bytes.

    ``with_special[i]`` is token i's bytes with special tokens as their text; ``without_special[i]`` has b"" for
    special tokens (``skip_special_tokens``). Ids past the end (a model's padded vocab) stand for nothing, as in
    ``tokenizer.decode``. For ``kind == "window"`` the tables are empty and text comes from ``tokenizer.decode``.
    """

    kind: DecoderKind
    with_special: list[bytes]
    without_special: list[bytes]
    special_ids: frozenset[int]
    strip_leading_space: bool  # SentencePiece decoders drop one space at the very start of the text

    def table(self, skip_special_tokens: bool) -> list[bytes]:
        return self.without_special if skip_special_tokens else self.with_special

    def __len__(self) -> int:
        return len(self.with_special)


# ---------------------------------------------------------------------------------------------------------------
# Building the table (once per tokenizer)


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character map used by every byte-level BPE vocabulary."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


_BYTE_OF_CHAR = {ch: b for b, ch in _bytes_to_unicode().items()}
_TO_LATIN1 = str.maketrans({ch: chr(b) for ch, b in _BYTE_OF_CHAR.items()})
# A token holding any character outside the byte alphabet is passed through as UTF-8 by the ByteLevel decoder.
_NOT_BYTE_ALPHABET = re.compile("[^" + re.escape("".join(_BYTE_OF_CHAR)) + "]")
_BYTE_FALLBACK = re.compile(r"<0x([0-9A-Fa-f]{2})>")

_cache: weakref.WeakKeyDictionary[Any, TokenBytes] = weakref.WeakKeyDictionary()
# Tokenizers that cannot be weakly referenced or hashed are kept alive here, keyed by id().
_strong_cache: dict[int, tuple[Any, TokenBytes]] = {}
_cache_lock = threading.Lock()


def token_bytes_table(tokenizer: PreTrainedTokenizerBase) -> TokenBytes:
    """The bytes of every token id of ``tokenizer``; computed once per tokenizer object, then cached (weakly)."""
    with _cache_lock:
        try:
            cached = _cache.get(tokenizer)
        except TypeError:
            return _strong_cached(tokenizer)
        if cached is None:
            cached = _build_table(tokenizer)
            _cache[tokenizer] = cached
        return cached


def _strong_cached(tokenizer: Any) -> TokenBytes:
    entry = _strong_cache.get(id(tokenizer))
    if entry is None or entry[0] is not tokenizer:
        entry = (tokenizer, _build_table(tokenizer))
        _strong_cache[id(tokenizer)] = entry
    return entry[1]


def _build_table(tokenizer: Any) -> TokenBytes:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = _decoder_config(backend)
    kind, byte_fallback, strip = _classify(decoder)
    if kind == "window" or backend is None:
        return TokenBytes("window", [], [], frozenset(_special_ids(tokenizer, backend)), False)
    with_special = _piece_table(backend, kind, byte_fallback)
    size = len(with_special)
    special = _special_ids(tokenizer, backend)
    without_special = list(with_special)
    for token_id in special:
        if 0 <= token_id < size:
            without_special[token_id] = b""
    return TokenBytes(kind, with_special, without_special, frozenset(special), strip)


def _piece_table(backend: Any, kind: DecoderKind, byte_fallback: bool) -> list[bytes]:
    """Token id -> its bytes; ids that stand for no token get b"".

    Id by id, not from ``get_vocab()``: that dict of every token string (~19 MB for Qwen's 151k) is built during
    the first request, when the model is already in memory, and took 2.4 s against 0.7 s this way (2 busy cores).
    A vocabulary whose ids run past its size (gaps) is read from ``get_vocab()`` after all."""
    added: dict[int, Any] = backend.get_added_tokens_decoder()
    size = max(int(backend.get_vocab_size(with_added_tokens=False)), max(added, default=-1) + 1)
    table = [b""] * size
    found = 0
    for token_id in range(size):
        token = backend.id_to_token(token_id)
        if token is not None:
            table[token_id] = _piece_bytes(token, kind, byte_fallback)
            found += 1
    if found == backend.get_vocab_size(with_added_tokens=True):
        return table
    vocab: dict[str, int] = backend.get_vocab(with_added_tokens=True)
    table = [b""] * (max(vocab.values(), default=-1) + 1)
    for token, token_id in vocab.items():
        table[token_id] = _piece_bytes(token, kind, byte_fallback)
    return table


def _decoder_config(backend: Any) -> dict[str, Any] | None:
    decoder = getattr(backend, "decoder", None)
    if decoder is None:
        return None
    try:
        config = json.loads(decoder.__getstate__())
    except (AttributeError, TypeError, ValueError):
        return None
    return config if isinstance(config, dict) else None


def _classify(decoder: dict[str, Any] | None) -> tuple[DecoderKind, bool, bool]:
    """(kind, has byte fallback, strips one leading space) for a decoder we can reproduce byte for byte."""
    if decoder is None:
        return "window", False, False
    parts = decoder.get("decoders") if decoder.get("type") == "Sequence" else [decoder]
    if not isinstance(parts, list) or not parts:
        return "window", False, False
    types = [p.get("type") for p in parts]
    if set(types) == {"ByteLevel"}:
        return "byte_level", False, False
    if not set(types) <= {"Replace", "ByteFallback", "Fuse", "Strip", "Metaspace"}:
        return "window", False, False
    if not all(_is_sentencepiece_part(p) for p in parts):
        return "window", False, False
    strip = any(p.get("type") == "Strip" for p in parts) or any(
        p.get("type") == "Metaspace" and _metaspace_strips(p) for p in parts
    )
    return "sentencepiece", "ByteFallback" in types, strip


def _is_sentencepiece_part(part: dict[str, Any]) -> bool:
    kind = part.get("type")
    if kind == "Replace":
        return part.get("pattern", {}).get("String") == "▁" and part.get("content") == " "
    if kind == "Strip":
        return part.get("content") == " " and part.get("start") == 1 and part.get("stop") == 0
    if kind == "Metaspace":
        return part.get("replacement") == "▁"
    return True  # ByteFallback, Fuse


def _metaspace_strips(part: dict[str, Any]) -> bool:
    if "prepend_scheme" in part:
        return bool(part["prepend_scheme"] != "never")
    return bool(part.get("add_prefix_space", True))


def _piece_bytes(token: str, kind: DecoderKind, byte_fallback: bool) -> bytes:
    if kind == "byte_level":
        if _NOT_BYTE_ALPHABET.search(token):
            return token.encode("utf-8")
        return token.translate(_TO_LATIN1).encode("latin-1")
    if byte_fallback:
        match = _BYTE_FALLBACK.fullmatch(token)
        if match:
            return bytes([int(match.group(1), 16)])
    return token.replace("▁", " ").encode("utf-8")


def _special_ids(tokenizer: Any, backend: Any) -> set[int]:
    """Ids that ``decode(..., skip_special_tokens=True)`` drops."""
    ids: set[int] = set()
    added = getattr(backend, "get_added_tokens_decoder", None)
    if callable(added):
        ids.update(i for i, tok in added().items() if getattr(tok, "special", False))
    ids.update(int(i) for i in getattr(tokenizer, "all_special_ids", []) if i is not None)
    return ids


# ---------------------------------------------------------------------------------------------------------------
# Streaming


class IncrementalDetokenizer:
    """Turns one request's token ids into text deltas; make one per request."""

    # The window fallback gives up waiting for a character to complete after this many tokens.
    _MAX_PENDING_TOKENS = 8

    def __init__(self, tokenizer: PreTrainedTokenizerBase, *, skip_special_tokens: bool = True) -> None:
        if tokenizer is None:
            raise TypeError("IncrementalDetokenizer needs a tokenizer, got None")
        self._tokenizer = tokenizer
        self._skip = bool(skip_special_tokens)
        info = token_bytes_table(tokenizer)
        self._windowed = info.kind == "window"
        self._table = info.table(self._skip)
        self._size = len(self._table)
        self._special = info.special_ids
        self._strip_pending = info.strip_leading_space  # until the first token reaches the decoder
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        # Window fallback state: ids[:read] were already emitted and are kept only as context.
        self._ids: list[int] = []
        self._read = 0

    def push(self, token_id: int) -> str:
        """Return the text this token completes ("" while a character is still incomplete)."""
        if token_id < 0:
            raise ValueError(f"token ids must be >= 0, got {token_id}")
        if self._windowed:
            return self._push_window(token_id)
        if token_id >= self._size:
            return ""  # outside the tokenizer's vocab (a padded embedding row): decode() ignores it too
        data = self._table[token_id]
        if self._strip_pending:
            data = self._strip_first(token_id, data)
        return self._utf8.decode(data) if data else ""

    def flush(self) -> str:
        """At the end of the stream: whatever is still held, with U+FFFD for bytes that never completed."""
        if self._windowed:
            return self._flush_window()
        return self._utf8.decode(b"", final=True)

    def _strip_first(self, token_id: int, data: bytes) -> bytes:
        if self._skip and token_id in self._special:
            return data  # skipped before the decoder sees it, so it is not "the first token"
        self._strip_pending = False
        if token_id in self._special:
            return data
        return data[1:] if data.startswith(b" ") else data

    # -- window fallback (unknown decoders): re-decode only the last few ids --------------------------------

    def _decode(self, ids: list[int]) -> str:
        return str(self._tokenizer.decode(ids, skip_special_tokens=self._skip))

    def _push_window(self, token_id: int) -> str:
        self._ids.append(token_id)
        prefix = self._decode(self._ids[: self._read]) if self._read else ""
        full = self._decode(self._ids)
        pending = len(self._ids) - self._read
        if full.endswith("\ufffd") and pending < self._MAX_PENDING_TOKENS:
            return ""  # probably half a character: wait for the next token
        if len(full) <= len(prefix) and pending < self._MAX_PENDING_TOKENS:
            return ""
        # Keep the just-emitted tokens as context so the next decode sees word boundaries correctly.
        self._ids = self._ids[self._read :]
        self._read = len(self._ids)
        return full[len(prefix) :]

    def _flush_window(self) -> str:
        if len(self._ids) == self._read:
            return ""
        prefix = self._decode(self._ids[: self._read]) if self._read else ""
        full = self._decode(self._ids)
        self._ids, self._read = [], 0
        return full[len(prefix) :]
