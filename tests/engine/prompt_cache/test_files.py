"""The prompt cache's files and store on a real directory: an entry round-trips; a flipped byte, a cut file, a file
of another model key or a stray file is skipped with a warning and deleted, never loaded; the bound, superseded
turns and queued writes hold across a restart. No model: the states are plain bytes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import pytest

from qwen_stream.engine.prompt_cache.files import (
    DamagedEntryError,
    entry_name,
    model_key,
    read_entry,
    read_header,
    write_entry,
)
from qwen_stream.engine.prompt_cache.store import PromptStore, open_prompt_store

KEY = "k" * 32
TOKENS = list(range(5, 305))
LOGITS = np.linspace(-3.0, 3.0, 50, dtype=np.float32)
STATE = bytes(range(256)) * 40


def saved(tmp_path: Path, tokens: list[int] = TOKENS, key: str = KEY) -> Path:
    path = tmp_path / f"{entry_name(tokens)}.qsp"
    write_entry(path, key, tokens, LOGITS, STATE)
    return path


def test_an_entry_round_trips(tmp_path: Path) -> None:
    path = saved(tmp_path)
    got = read_entry(path, KEY)
    assert got.tokens.tolist() == TOKENS
    assert got.logits is not None and np.array_equal(got.logits, LOGITS)
    assert bytes(got.state) == STATE
    header = read_header(path, KEY)
    assert header.tokens.tolist() == TOKENS and header.has_logits and header.size == path.stat().st_size
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
    without = tmp_path / "no-logits.qsp"
    write_entry(without, KEY, TOKENS, None, STATE)
    assert read_entry(without, KEY).logits is None and not read_header(without, KEY).has_logits
    assert (header.exact, header.row_exact) == (0, False)  # by default nothing is claimed to be a cold run's
    exact = tmp_path / "exact.qsp"
    write_entry(exact, KEY, TOKENS, LOGITS, STATE, exact=2, row_exact=True)
    assert (read_header(exact, KEY).exact, read_header(exact, KEY).row_exact) == (2, True)


@pytest.mark.parametrize("where", [0, 30, 1000, -40, -1])  # magic, token ids, state, the end of state, the digest
def test_a_flipped_byte_is_never_loaded(tmp_path: Path, where: int) -> None:
    path = saved(tmp_path)
    data = bytearray(path.read_bytes())
    data[where] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedEntryError):
        read_entry(path, KEY)


def test_a_truncated_file_is_refused_even_by_the_cheap_header_read(tmp_path: Path) -> None:
    path = saved(tmp_path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(DamagedEntryError, match="truncated"):
        read_header(path, KEY)
    with pytest.raises(DamagedEntryError):
        read_entry(path, KEY)
    path.write_bytes(b"QSP")
    with pytest.raises(DamagedEntryError, match="header"):
        read_header(path, KEY)


def test_a_file_of_another_model_key_is_refused(tmp_path: Path) -> None:
    path = saved(tmp_path, key="x" * 32)
    with pytest.raises(DamagedEntryError, match="another model"):
        read_header(path, KEY)
    with pytest.raises(DamagedEntryError, match="another model"):
        read_entry(path, KEY)


def test_the_model_key_follows_the_weights_and_the_layout(tmp_path: Path) -> None:
    weights = tmp_path / "model.gguf"
    weights.write_bytes(os.urandom(3 << 20))
    key = model_key(weights, "f16")
    assert key == model_key(weights, "f16") and key != model_key(weights, "q8_0")
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # the last MiB changed: another model file
    weights.write_bytes(bytes(data))
    assert model_key(weights, "f16") != key


def store(root: Path, *, max_bytes: int = 1 << 30) -> PromptStore:
    return PromptStore(root, KEY, max_bytes=max_bytes, label="tiny", min_tokens=8)


def save_and_close(root: Path, *prompts: list[int]) -> None:
    s = store(root)
    for prompt in prompts:
        assert s.save(prompt, LOGITS, STATE)
    s.close()


def test_a_restarted_store_finds_what_was_saved_and_loads_it(tmp_path: Path) -> None:
    save_and_close(tmp_path, TOKENS)
    s = store(tmp_path)
    match = s.best([*TOKENS, 1, 2])
    assert match is not None and (match.length, match.shared, match.has_logits) == (300, 300, True)
    assert bytes(s.read(match.name).state) == STATE
    assert not s.wants(TOKENS) and not s.wants(TOKENS[:100])  # saved already (as itself, or as its start)
    assert s.wants([*TOKENS, 1]) and not s.wants(TOKENS[:7])  # new; too short to be worth a file
    s.close()


def test_damaged_files_are_skipped_with_a_warning_and_deleted(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    other = [*TOKENS[:50], 9, 9]
    save_and_close(tmp_path, TOKENS, other)
    folder = store(tmp_path).dir
    paths = {p.stem: p for p in folder.glob("*.qsp")}
    cut = paths[entry_name(other)]
    cut.write_bytes(cut.read_bytes()[:-10])  # truncated: caught when the store opens
    flipped = paths[entry_name(TOKENS)]
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 0x40  # inside the state: only the checksum sees it, at load time
    flipped.write_bytes(bytes(data))
    (folder / "stray.qsp").write_bytes(b"not an entry at all")
    with caplog.at_level(logging.WARNING):
        s = store(tmp_path)
        assert not cut.exists() and not (folder / "stray.qsp").exists()
        match = s.best(TOKENS)
        assert match is not None and match.name == flipped.stem
        with pytest.raises(DamagedEntryError, match="checksum"):
            s.read(match.name)
    assert not flipped.exists() and s.best(TOKENS) is None and s.entries == 0
    assert sum("skipping and deleting" in r.message for r in caplog.records) == 3
    s.close()


def test_the_bound_keeps_the_most_recently_used_and_a_new_turn_supersedes_the_last(tmp_path: Path) -> None:
    one = len(STATE) + 4 * len(TOKENS) + 4 * len(LOGITS) + 200  # an entry's size, with room for its header
    s = PromptStore(tmp_path, KEY, max_bytes=2 * one, label="tiny", min_tokens=8)
    first, second, third = ([*TOKENS, i] for i in (1, 2, 3))
    for prompt in (first, second):
        assert s.save(prompt, LOGITS, STATE)
    s.close()
    s = PromptStore(tmp_path, KEY, max_bytes=2 * one, label="tiny", min_tokens=8)
    match = s.best(first)
    assert match is not None and match.shared == len(first)
    s.touch(match.name)  # first was loaded: second is now the least recently used
    assert s.save(third, LOGITS, STATE)
    assert s.save([*first, 7, 8], LOGITS, STATE)  # the next turn of first's conversation
    s.close()
    names = {p.stem for p in s.dir.glob("*.qsp")}
    assert names == {entry_name(third), entry_name([*first, 7, 8])}
    assert not s.save([*TOKENS, 4], LOGITS, STATE)  # closed: nothing more is queued


def test_a_save_too_big_for_the_bound_or_already_queued_is_dropped(tmp_path: Path) -> None:
    s = PromptStore(tmp_path, KEY, max_bytes=len(STATE) // 2, label="tiny", min_tokens=8)
    assert not s.save(TOKENS, LOGITS, STATE)
    s.close()
    s = PromptStore(tmp_path, KEY, max_bytes=1 << 30, label="tiny", min_tokens=8, max_pending_bytes=len(STATE) * 3)
    s._pending[entry_name(TOKENS)] = (np.asarray(TOKENS, np.int32), len(STATE) * 2)  # as if being written
    assert not s.wants(TOKENS[:200])  # covered by a prompt being written
    assert not s.save(TOKENS, LOGITS, STATE)  # the same prompt is being written
    assert not s.save([*TOKENS, 1], LOGITS, STATE)  # too much waits for the disk already
    s._pending.clear()
    s.close()


def test_a_runner_that_cannot_save_its_kv_is_refused(tmp_path: Path) -> None:
    class Plain:
        name = "torch-native"

    with pytest.raises(ValueError, match=r"llama\.cpp runner"):
        open_prompt_store(tmp_path, Plain())
