"""The real Qwen tokenizer, built offline from the ``qwen.tiktoken`` file.

Qwen-7B-Chat ships its vocabulary as a tiktoken BPE file; Alibaba's ``dashscope`` package (on PyPI) carries the
same file. Converted with transformers' ``TikTokenConverter``, it gives a fast tokenizer whose ids match the
Qwen2/2.5 tokenizers exactly on ordinary text, so tests and the legacy Qwen-7B-Chat format need no model hub.

Converting takes several seconds, so the converted ``tokenizer.json`` is cached on disk (keyed by the tiktoken
file's hash) and the wrapped tokenizer is cached in-process.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import tempfile
from pathlib import Path

from transformers import PreTrainedTokenizerFast

__all__ = [
    "ENDOFTEXT",
    "IM_END",
    "IM_START",
    "QWEN_CHAT_TEMPLATE",
    "build_qwen_tokenizer",
    "default_tiktoken_file",
    "qwen_special_tokens",
    "tokenizer_cache_dir",
]

ENDOFTEXT = "<|endoftext|>"
IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
_NUM_EXTRAS = 205  # Qwen-7B's <|extra_0|> .. <|extra_204|>, right after the three above
_FIRST_SPECIAL_ID = 151643  # the tiktoken file holds ranks 0 .. 151642

# Qwen's pre-tokenizer split: like GPT-4's, but digits one at a time (\p{N}, not \p{N}{1,3}).
_QWEN_PATTERN = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""

# ChatML as Qwen2.5 writes it, with the default system prompt when the conversation has none.
QWEN_CHAT_TEMPLATE = (
    "{%- if messages and messages[0]['role'] == 'system' %}"
    "{{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}"
    "{%- set rest = messages[1:] %}"
    "{%- else %}"
    "{{- '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}"
    "{%- set rest = messages %}"
    "{%- endif %}"
    "{%- for message in rest %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- endif %}"
)

# Bump when the way the tokenizer.json is built changes, so stale caches are not reused.
_CACHE_FORMAT = "v1"


def qwen_special_tokens() -> list[str]:
    """Qwen-7B's special tokens in id order, starting at id 151643."""
    return [ENDOFTEXT, IM_START, IM_END] + [f"<|extra_{i}|>" for i in range(_NUM_EXTRAS)]


def default_tiktoken_file() -> Path:
    """Where the installed ``dashscope`` package keeps ``qwen.tiktoken``."""
    spec = importlib.util.find_spec("dashscope")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "The Qwen tokenizer file comes from the 'dashscope' package, which is not installed: "
            "run `pip install dashscope` (or pass the path of a qwen.tiktoken file)."
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "resources" / "qwen.tiktoken"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "The installed 'dashscope' package has no resources/qwen.tiktoken; "
        "run `pip install --force-reinstall dashscope` (or pass the path of a qwen.tiktoken file)."
    )


def build_qwen_tokenizer(tiktoken_file: str | Path | None = None) -> PreTrainedTokenizerFast:
    """Return the Qwen tokenizer for ``tiktoken_file`` (default: the one inside ``dashscope``).

    ``tiktoken_file`` may also be a directory holding ``qwen.tiktoken`` (a Qwen-7B-Chat checkpoint).
    The same object is returned for the same file within a process; do not mutate it.
    """
    if tiktoken_file is not None and not isinstance(tiktoken_file, (str, Path)):
        raise TypeError(f"tiktoken_file must be a path or None, got {type(tiktoken_file).__name__}")
    path = default_tiktoken_file() if tiktoken_file is None else Path(tiktoken_file)
    if path.is_dir():
        path = path / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"no qwen.tiktoken file at {path}")
    return _build_cached(str(path.resolve()))


@functools.lru_cache(maxsize=4)
def _build_cached(path: str) -> PreTrainedTokenizerFast:
    tokenizer_json = _cached_tokenizer_json(Path(path))
    return _wrap(tokenizer_json)


def tokenizer_cache_dir() -> Path:
    """Where converted tokenizers are kept: <cache root>/tokenizers/qwen-tiktoken."""
    from qwen_stream.models.registry import cache_root

    return cache_root() / "tokenizers" / "qwen-tiktoken"


def _cached_tokenizer_json(tiktoken_path: Path) -> Path:
    """Convert once per distinct tiktoken file; later builds read the saved tokenizer.json."""
    digest = hashlib.sha256(tiktoken_path.read_bytes()).hexdigest()[:16]
    target_dir = tokenizer_cache_dir() / f"{digest}-{_CACHE_FORMAT}"
    target = target_dir / "tokenizer.json"
    if target.is_file():
        return target
    tokenizer = _convert(tiktoken_path)
    target_dir.mkdir(parents=True, exist_ok=True)
    # Write to a temporary name and rename, so a concurrent or interrupted build never leaves half a file.
    fd, tmp_name = tempfile.mkstemp(dir=target_dir, suffix=".tmp")
    os.close(fd)
    try:
        tokenizer.save(tmp_name)
        os.replace(tmp_name, target)
    finally:
        if os.path.exists(tmp_name):
            os.unlink(tmp_name)
    return target


def _convert(tiktoken_path: Path):  # -> tokenizers.Tokenizer
    from tokenizers import AddedToken, normalizers
    from transformers.convert_slow_tokenizer import TikTokenConverter

    tokenizer = TikTokenConverter(vocab_file=str(tiktoken_path), pattern=_QWEN_PATTERN).converted()
    if tokenizer.get_vocab_size() != _FIRST_SPECIAL_ID:
        raise ValueError(
            f"{tiktoken_path} holds {tokenizer.get_vocab_size()} tokens, expected {_FIRST_SPECIAL_ID}: "
            "not a Qwen tiktoken file"
        )
    tokenizer.normalizer = normalizers.NFC()  # Qwen normalizes input to NFC before splitting
    # Added in order, they take ids 151643, 151644, ... exactly as Qwen numbers them.
    tokenizer.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in qwen_special_tokens()])
    if tokenizer.token_to_id(IM_END) != _FIRST_SPECIAL_ID + 2:
        raise RuntimeError("Qwen special tokens did not get their expected ids")
    return tokenizer


def _wrap(tokenizer_json: Path) -> PreTrainedTokenizerFast:
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_file=str(tokenizer_json),
        eos_token=IM_END,  # a chat turn ends with <|im_end|>
        pad_token=ENDOFTEXT,
        unk_token=None,
        bos_token=None,
        clean_up_tokenization_spaces=False,  # keep decode() byte-exact, as Qwen's own tokenizers do
        model_max_length=32768,
    )
    tokenizer.chat_template = QWEN_CHAT_TEMPLATE
    return tokenizer
