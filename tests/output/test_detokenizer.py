"""IncrementalDetokenizer with the real Qwen tokenizer: UTF-8 safe, equal to decode(), O(1) per token."""

from __future__ import annotations

import random
from typing import Any

import pytest
from tokenizers import Tokenizer, decoders, normalizers
from tokenizers.models import BPE
from transformers import PreTrainedTokenizerFast

from qwen_stream.output.detokenizer import IncrementalDetokenizer, token_bytes_table

ROBOT = [11162, 97, 244]  # " 🤖" as three byte-level tokens: b" \xf0\x9f", b"\xa4", b"\x96"
STORY_IDS = [14880, 104169, 99526, 46944, 103027, 104413, 11162, 97, 244, 23811]

TEXTS = [
    "请给我讲一个有趣的故事 🤖 hello",
    "Hello, world! It's a test... of   spaces\tand\nnewlines\r\n",
    "日本語のかなとカタカナ、한국어 한글, Ελληνικά, русский, עברית, العربية",
    "emoji: 👩‍👩‍👧‍👦 🇨🇳 🏳️‍🌈 ❤️ 🤖🤖🤖",
    "def f(x):\n    return {'a': [1, 2, 3]}  # code 1234567890\n",
    "math: ∑ᵢ xᵢ² ≤ ∞, café, naïve, Ångström, 𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "  leading spaces and trailing  ",
    "。！？，、；：「」『』（）【】《》",
]


def stream(tokenizer: Any, ids: list[int], *, skip: bool = True) -> list[str]:
    detok = IncrementalDetokenizer(tokenizer, skip_special_tokens=skip)
    return [detok.push(i) for i in ids] + [detok.flush()]


class CountingTokenizer:
    """The real Qwen tokenizer behind a thin wrapper that counts decode() work.

    It exposes no ``backend_tokenizer``, so the detokenizer must use its window fallback.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.all_special_ids = inner.all_special_ids
        self.decode_calls = 0
        self.max_ids_per_decode = 0

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        self.decode_calls += 1
        self.max_ids_per_decode = max(self.max_ids_per_decode, len(ids))
        return str(self._inner.decode(ids, skip_special_tokens=skip_special_tokens))


def test_emoji_split_over_three_tokens_is_held_until_complete(qwen_tokenizer) -> None:
    assert stream(qwen_tokenizer, ROBOT) == [" ", "", "🤖", ""]


def test_story_streams_without_replacement_characters(qwen_tokenizer) -> None:
    deltas = stream(qwen_tokenizer, STORY_IDS)
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == qwen_tokenizer.decode(STORY_IDS) == "请给我讲一个有趣的故事 🤖 hello"


@pytest.mark.parametrize("text", TEXTS)
def test_streamed_text_equals_decode(qwen_tokenizer, text: str) -> None:
    ids = qwen_tokenizer.encode(text)
    deltas = stream(qwen_tokenizer, ids)
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == qwen_tokenizer.decode(ids) == text


def test_every_single_token_matches_decode(qwen_tokenizer) -> None:
    table = token_bytes_table(qwen_tokenizer)
    assert table.kind == "byte_level" and len(table) == len(qwen_tokenizer)
    for token_id in range(len(table)):
        expected = qwen_tokenizer.decode([token_id], skip_special_tokens=False)
        assert table.with_special[token_id].decode("utf-8", "replace") == expected, token_id


@pytest.mark.parametrize("skip", [True, False])
def test_random_ids_match_decode(qwen_tokenizer, skip: bool) -> None:
    # Random ids break UTF-8 everywhere; ids past len(tokenizer) mimic a model's padded vocab (151936).
    rng = random.Random(1234)
    specials = [151643, 151644, 151645, 151700]
    for _ in range(300):
        ids = [
            rng.choice(specials) if rng.random() < 0.05 else rng.randrange(151936) for _ in range(rng.randrange(1, 80))
        ]
        assert "".join(stream(qwen_tokenizer, ids, skip=skip)) == qwen_tokenizer.decode(ids, skip_special_tokens=skip)


def test_special_tokens_skipped_or_shown(qwen_tokenizer) -> None:
    ids = [151644, *qwen_tokenizer.encode("assistant\n你好"), 151645]
    assert "".join(stream(qwen_tokenizer, ids, skip=True)) == "assistant\n你好"
    assert "".join(stream(qwen_tokenizer, ids, skip=False)) == "<|im_start|>assistant\n你好<|im_end|>"
    assert token_bytes_table(qwen_tokenizer).without_special[151645] == b""


def test_flush_releases_an_incomplete_character(qwen_tokenizer) -> None:
    deltas = stream(qwen_tokenizer, ROBOT[:2])
    assert deltas[:2] == [" ", ""]
    assert deltas[-1] == "\ufffd"
    assert "".join(deltas) == qwen_tokenizer.decode(ROBOT[:2])


def test_bad_and_unknown_ids(qwen_tokenizer) -> None:
    detok = IncrementalDetokenizer(qwen_tokenizer)
    assert detok.push(151_900) == ""  # padded vocab row: stands for nothing
    with pytest.raises(ValueError, match=">= 0"):
        detok.push(-1)
    with pytest.raises(TypeError):
        IncrementalDetokenizer(None)  # type: ignore[arg-type]


def test_table_is_built_once_per_tokenizer(qwen_tokenizer) -> None:
    assert token_bytes_table(qwen_tokenizer) is token_bytes_table(qwen_tokenizer)


def test_byte_table_path_never_calls_decode(qwen_tokenizer) -> None:
    # 20k tokens of real text: the table path does no tokenizer work at all per token.
    ids = qwen_tokenizer.encode(TEXTS[0] + TEXTS[2] + TEXTS[3]) * 500
    assert len(ids) > 20_000
    counting = CountingTokenizer(qwen_tokenizer)
    counting.backend_tokenizer = qwen_tokenizer.backend_tokenizer  # type: ignore[attr-defined]
    detok = IncrementalDetokenizer(counting)  # type: ignore[arg-type]
    pieces = [detok.push(i) for i in ids]
    assert counting.decode_calls == 0
    assert "".join(pieces) + detok.flush() == qwen_tokenizer.decode(ids)


@pytest.mark.parametrize("text", TEXTS)
def test_window_fallback_matches_decode(qwen_tokenizer, text: str) -> None:
    counting = CountingTokenizer(qwen_tokenizer)
    assert token_bytes_table(counting).kind == "window"  # type: ignore[arg-type]
    ids = qwen_tokenizer.encode(text)
    deltas = stream(counting, ids)
    assert all("\ufffd" not in d for d in deltas)
    assert "".join(deltas) == text


def test_window_fallback_work_per_token_does_not_grow(qwen_tokenizer) -> None:
    counting = CountingTokenizer(qwen_tokenizer)
    ids = qwen_tokenizer.encode(TEXTS[0] + TEXTS[3]) * 1000
    assert len(ids) > 20_000
    detok = IncrementalDetokenizer(counting)  # type: ignore[arg-type]
    for token_id in ids:
        detok.push(token_id)
    # Two decodes of a few ids per token, however long the text already is.
    assert counting.decode_calls <= 2 * len(ids)
    assert counting.max_ids_per_decode <= 16


# --- SentencePiece-style tokenizers (Llama 2, Mistral): built here from a tiny vocabulary -----------------


def sentencepiece_tokenizer(decoder: Any) -> PreTrainedTokenizerFast:
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab[f"<0x{b:02X}>"] = len(vocab)
    for piece in ["▁", *"abcdefghijklmnopqrstuvwxyz", "▁t", "he", "▁the", "▁a"]:
        vocab[piece] = len(vocab)
    merges = [("▁", "t"), ("h", "e"), ("▁t", "he"), ("▁", "a")]
    backend = Tokenizer(BPE(vocab, merges, unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoder
    return PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


LLAMA2_DECODER = decoders.Sequence(
    [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
)


@pytest.mark.parametrize("text", ["the cat ate the hat", "a café 🤖 über", " leading", "é"])
def test_sentencepiece_byte_fallback_matches_decode(text: str) -> None:
    tokenizer = sentencepiece_tokenizer(LLAMA2_DECODER)
    assert token_bytes_table(tokenizer).kind == "sentencepiece"
    ids = [tokenizer.bos_token_id, *tokenizer.encode(text, add_special_tokens=False), tokenizer.eos_token_id]
    for skip in (True, False):
        deltas = stream(tokenizer, ids, skip=skip)
        assert all("\ufffd" not in d for d in deltas)
        assert "".join(deltas) == tokenizer.decode(ids, skip_special_tokens=skip)


def test_metaspace_decoder_matches_decode() -> None:
    tokenizer = sentencepiece_tokenizer(decoders.Metaspace(replacement="▁", prepend_scheme="first"))
    assert token_bytes_table(tokenizer).kind == "sentencepiece"
    ids = tokenizer.encode("the hat ate a the", add_special_tokens=False)
    assert "".join(stream(tokenizer, ids)) == tokenizer.decode(ids) == "the hat ate a the"


class UnhashableTokenizer(CountingTokenizer):
    """Defines __eq__ without __hash__, so it cannot key a WeakKeyDictionary."""

    def __eq__(self, other: object) -> bool:
        return self is other


def test_unhashable_tokenizers_are_cached_too(qwen_tokenizer) -> None:
    tokenizer = UnhashableTokenizer(qwen_tokenizer)
    tokenizer.backend_tokenizer = qwen_tokenizer.backend_tokenizer  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        hash(tokenizer)
    table = token_bytes_table(tokenizer)  # type: ignore[arg-type]
    assert table.kind == "byte_level" and token_bytes_table(tokenizer) is table  # type: ignore[arg-type]
    assert "".join(stream(tokenizer, STORY_IDS)) == "请给我讲一个有趣的故事 🤖 hello"


def test_table_holds_every_vocabulary_entry(qwen_tokenizer) -> None:
    # built id by id (no dict of all 151k token strings at once); the same as reading get_vocab()
    info = token_bytes_table(qwen_tokenizer)
    vocab = qwen_tokenizer.backend_tokenizer.get_vocab(with_added_tokens=True)
    assert len(info) == max(vocab.values()) + 1
    assert sum(1 for piece in info.with_special if piece) == len(vocab)
    assert info.with_special[vocab["Ġhello"]] == b" hello" and info.with_special[151645] == b"<|im_end|>"


def test_table_of_a_vocabulary_with_gaps_in_its_ids() -> None:
    # three tokens, ids 0, 1 and 9: the ids run past the vocabulary's size, so the table reads get_vocab()
    backend = Tokenizer(BPE(vocab={"a": 0, "b": 1, "c": 9}, merges=[]))
    backend.decoder = decoders.ByteLevel()
    info = token_bytes_table(PreTrainedTokenizerFast(tokenizer_object=backend))
    assert info.kind == "byte_level" and len(info) == 10
    assert info.with_special[:2] == [b"a", b"b"] and info.with_special[9] == b"c"
    assert info.with_special[2:9] == [b""] * 7
