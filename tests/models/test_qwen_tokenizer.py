"""The real Qwen tokenizer built offline from dashscope's qwen.tiktoken."""

from __future__ import annotations

import base64
import shutil
import time
from pathlib import Path

import pytest

from qwen_stream.models.qwen_tokenizer import (
    ENDOFTEXT,
    IM_END,
    IM_START,
    build_qwen_tokenizer,
    default_tiktoken_file,
    qwen_special_tokens,
    tokenizer_cache_dir,
)

STORY = "请给我讲一个有趣的故事 🤖 hello"
STORY_IDS = [14880, 104169, 99526, 46944, 103027, 104413, 11162, 97, 244, 23811]


def test_ids_match_qwen2_5(qwen_tokenizer) -> None:
    assert qwen_tokenizer.encode(STORY) == STORY_IDS
    assert qwen_tokenizer.decode(STORY_IDS) == STORY


def test_digits_split_one_by_one_like_qwen(qwen_tokenizer) -> None:
    # Qwen's pre-tokenizer uses \p{N} (single digits), not GPT-4's \p{N}{1,3}.
    assert qwen_tokenizer.encode("12345") == [16, 17, 18, 19, 20]


def test_input_is_nfc_normalized(qwen_tokenizer) -> None:
    assert qwen_tokenizer.encode("cafe\u0301") == qwen_tokenizer.encode("caf\u00e9")


def test_special_tokens_have_qwen_ids(qwen_tokenizer) -> None:
    ids = qwen_tokenizer.convert_tokens_to_ids([ENDOFTEXT, IM_START, IM_END, "<|extra_0|>", "<|extra_204|>"])
    assert ids == [151643, 151644, 151645, 151646, 151850]
    assert len(qwen_tokenizer) == 151643 + len(qwen_special_tokens()) == 151851
    assert qwen_tokenizer.eos_token == IM_END and qwen_tokenizer.eos_token_id == 151645
    assert qwen_tokenizer.pad_token == ENDOFTEXT and qwen_tokenizer.pad_token_id == 151643
    # Special tokens in text are single tokens, and decode can drop them.
    assert qwen_tokenizer.encode("<|im_start|>user") == [151644, 872]
    assert qwen_tokenizer.decode([151644, 872, 151645], skip_special_tokens=True) == "user"


def test_chat_template_is_chatml_with_default_system(qwen_tokenizer) -> None:
    text = qwen_tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True
    )
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    )
    # The same ids Qwen2.5's own tokenizer gives for this prompt.
    assert qwen_tokenizer.encode(text)[:4] == [151644, 8948, 198, 2610]
    assert qwen_tokenizer.encode(text)[-3:] == [151644, 77091, 198]


def test_chat_template_honours_system_and_generation_prompt(qwen_tokenizer) -> None:
    messages = [
        {"role": "system", "content": "Be terse."},
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "你好！"},
        {"role": "user", "content": "再见"},
    ]
    text = qwen_tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)
    assert text == (
        "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\n你好<|im_end|>\n"
        "<|im_start|>assistant\n你好！<|im_end|>\n<|im_start|>user\n再见<|im_end|>\n"
    )


def test_same_object_within_a_process(qwen_tokenizer) -> None:
    assert build_qwen_tokenizer() is qwen_tokenizer
    assert build_qwen_tokenizer(default_tiktoken_file()) is qwen_tokenizer
    assert build_qwen_tokenizer(str(default_tiktoken_file().parent)) is qwen_tokenizer  # a checkpoint directory


def test_converted_tokenizer_is_cached_on_disk(qwen_tokenizer, tmp_path: Path) -> None:
    # The fixture's build left the converted tokenizer.json in the cache (converting takes seconds).
    saved = list(tokenizer_cache_dir().glob("*/tokenizer.json"))
    assert saved, "the first build should have saved tokenizer.json"
    stamps = {path: path.stat().st_mtime_ns for path in saved}
    # A copy under a new name misses the in-process cache, so this build reads the disk cache back.
    copy = shutil.copy(default_tiktoken_file(), tmp_path / "qwen.tiktoken")
    started = time.perf_counter()
    rebuilt = build_qwen_tokenizer(copy)
    reload_s = time.perf_counter() - started
    assert {path: path.stat().st_mtime_ns for path in saved} == stamps  # read, not converted again
    assert rebuilt is not qwen_tokenizer and rebuilt.encode(STORY) == STORY_IDS
    assert reload_s < 30  # generous on a loaded machine; converting is what takes long


def test_bad_inputs_are_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"no qwen\.tiktoken"):
        build_qwen_tokenizer(tmp_path / "missing.tiktoken")
    with pytest.raises(FileNotFoundError, match=r"no qwen\.tiktoken"):
        build_qwen_tokenizer(tmp_path)  # a directory without the file
    with pytest.raises(TypeError, match="path"):
        build_qwen_tokenizer(42)  # type: ignore[arg-type]


def test_a_non_qwen_tiktoken_file_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QWEN_STREAM_CACHE", str(tmp_path / "cache"))
    tiny = tmp_path / "tiny.tiktoken"
    tiny.write_text("".join(f"{base64.b64encode(bytes([b])).decode()} {b}\n" for b in range(256)))
    with pytest.raises(ValueError, match="not a Qwen tiktoken file"):
        build_qwen_tokenizer(tiny)
