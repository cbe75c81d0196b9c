"""The fast prefill on llama.cpp (runners/llamacpp_kv.py, int8_prefill.py, llamacpp_prefill.py) with the real
SmolLM2-135M GGUF: llama.cpp's own state bytes parsed and written back, keys in the GGUF's layout, and prompt
chunks computed by int8 GEMMs that llama.cpp then decodes from."""

from __future__ import annotations

import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from qwen_stream.engine.runners.base import SeqChunk

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")

from qwen_stream.engine.runners.int8_prefill import Int8Prefill, build_int8_prefill, interleave_order
from qwen_stream.engine.runners.llamacpp import LlamaCppRunner
from qwen_stream.engine.runners.llamacpp_kv import SeqKV, build_seq_state, parse_seq_state

pytestmark = [pytest.mark.llamacpp, pytest.mark.slow]

LAYERS, WIDTH = 30, 192  # SmolLM2-135M: 30 layers, 3 KV heads of 64


def test_interleave_order_pairs_the_two_rotary_halves() -> None:
    assert interleave_order(6).tolist() == [0, 3, 1, 4, 2, 5]


def test_a_state_of_another_layout_is_refused() -> None:
    header = struct.pack("<II", 0xAF143CD8, 0)
    two_streams = header + struct.pack("<II", 2, 0)
    with pytest.raises(ValueError, match="streams"):
        parse_seq_state(two_streams, LAYERS, WIDTH)
    rows = [np.zeros((1, WIDTH), np.float16)] * LAYERS
    good = build_seq_state(header, 0, np.array([0], np.int32), rows, rows)
    assert parse_seq_state(good, LAYERS, WIDTH).positions.tolist() == [0]
    with pytest.raises(ValueError, match="bytes"):
        parse_seq_state(good + b"\0", LAYERS, WIDTH)
    with pytest.raises(ValueError, match="layers"):
        parse_seq_state(good, LAYERS - 1, WIDTH)
    with pytest.raises(ValueError, match="float16"):
        parse_seq_state(good, LAYERS, WIDTH * 2)


@pytest.fixture(scope="module")
def runner(gguf_path: Path) -> Iterator[LlamaCppRunner]:
    with LlamaCppRunner(gguf_path, max_slots=3, max_seq_len=2048, threads=1, kv_budget=4096) as r:
        yield r


@pytest.fixture(scope="module")
def prefill(gguf_path: Path) -> Int8Prefill:
    from qwen_stream.models import sources

    # SmolLM2's trained window, as the engine builds it (prefill_setup.py): one saved copy serves both
    return build_int8_prefill(sources.resolve_source(str(gguf_path), progress=False), window=8192, threads=1)


def prompt(n: int) -> list[int]:
    return [int(t) for t in torch.randint(200, 40000, (n,), generator=torch.Generator().manual_seed(n))]


def test_a_state_written_back_from_parsed_rows_gives_the_same_logits(runner: LlamaCppRunner) -> None:
    ids = prompt(70)
    runner.forward([SeqChunk(0, ids, 0)])
    saved = runner.save_state(0)
    kv = parse_seq_state(saved, LAYERS, WIDTH)
    assert kv.positions.tolist() == list(range(70)) and kv.k[0].shape == (70, WIDTH)
    runner.load_state(1, saved, 70, keep=69)  # llama.cpp's own bytes, less the last position
    data = build_seq_state(kv.header, 2, kv.positions[:69], [k[:69] for k in kv.k], [v[:69] for v in kv.v])
    runner.load_state(2, data, 69)  # ours, written from the parsed rows
    own = runner.forward([SeqChunk(1, ids[69:], 69)]).clone()
    ours = runner.forward([SeqChunk(2, ids[69:], 69)])
    assert torch.equal(own, ours)
    for slot in range(3):
        runner.free_slot(slot)


def test_fast_chunks_hold_llama_cpps_keys_and_its_next_token(runner: LlamaCppRunner, prefill: Int8Prefill) -> None:
    ids = prompt(600)
    reference = [runner.forward([SeqChunk(0, ids[:512], 0, want_logits=False)]),
                 runner.forward([SeqChunk(0, ids[512:], 512)]).clone()][1]
    cold = parse_seq_state(runner.save_state(0), LAYERS, WIDTH)
    runner.free_slot(0)
    runner.attach_prefill(prefill)
    assert runner.fast_prefill_ready
    runner.forward([SeqChunk(0, ids[:512], 0, want_logits=False, fast=True)])
    assert runner.slot_length(0) == 512
    logits = runner.forward([SeqChunk(0, ids[512:], 512, fast=True)])  # its last token goes to llama.cpp
    fast = parse_seq_state(runner.save_state(0), LAYERS, WIDTH)
    assert fast.positions.tolist() == list(range(600))
    # Layer 0's keys depend on the embeddings and one projection only: a wrong rotary layout would be ~100% off.
    k0, k0_fast = cold.k[0].astype(np.float32), fast.k[0].astype(np.float32)
    assert np.abs(k0 - k0_fast).mean() / np.abs(k0).mean() < 0.03
    assert logits.shape == reference.shape and logits.argmax().item() == reference.argmax().item()
    # Decoding goes on from the computed cache as from llama.cpp's own.
    nxt = int(logits.argmax())
    step = runner.forward([SeqChunk(0, [nxt], 600)])
    assert step.shape == (1, runner.vocab_size) and torch.isfinite(step).all()
    runner.free_slot(0)


def _engine(gguf_path: Path, prefill: str) -> Any:
    from qwen_stream.api import ChatModel

    return ChatModel.load(str(gguf_path), progress=False, max_batch_size=2, context_length=2048, prefill=prefill,
                          speculate=False)


def test_the_engine_sends_drawn_seeds_fast_and_own_seeds_through_llama_cpp(gguf_path: Path) -> None:
    question = "Summarise this list of numbers. " + " ".join(str(i) for i in range(400))
    with _engine(gguf_path, "int8") as model:
        assert model.runner is not None and model.runner.prefill_always  # type: ignore[attr-defined]
        text, _ = model.chat(question, max_new_tokens=8, temperature=0.0)
        fast = model.engine.stats().fast_prefill_tokens
        assert text.strip() and fast > 500
        model.chat(question + " Again.", max_new_tokens=8, temperature=0.7, seed=5)
        assert model.engine.stats().fast_prefill_tokens == fast  # a seed of its own: llama.cpp's kernels only
        other = "Count these words. " + " ".join(f"w{i}" for i in range(300))  # no prefix cached: computed anew
        model.chat(other, max_new_tokens=8, temperature=0.7)
        assert model.engine.stats().fast_prefill_tokens > fast  # a drawn seed: fast again


def test_a_cache_layout_it_cannot_write_falls_back_to_llama_cpp(gguf_path: Path, prefill: Int8Prefill) -> None:
    # Without flash attention llama.cpp stores V transposed, which llamacpp_kv.py does not read: the chunks go to
    # llama.cpp whole (the first fails to load, the second finds the layout refused), the answer is llama.cpp's own.
    ids = prompt(700)
    with LlamaCppRunner(gguf_path, max_slots=2, max_seq_len=1024, threads=1, kv_budget=2048, flash_attn=False) as r:
        plain = [r.forward([SeqChunk(0, ids[:512], 0, want_logits=False)]),
                 r.forward([SeqChunk(0, ids[512:], 512)]).clone()][1]
        r.free_slot(0)
        r.attach_prefill(prefill)
        r.forward([SeqChunk(0, ids[:512], 0, want_logits=False, fast=True)])
        fell_back = r.forward([SeqChunk(0, ids[512:], 512, fast=True)])
        assert not r.fast_prefill_ready and torch.equal(plain, fell_back)


def test_the_int8_copy_is_saved_once_and_loaded_after(gguf_path: Path, tmp_path: Path) -> None:
    from qwen_stream.engine.runners.int8_prefill import cached_path
    from qwen_stream.models import sources

    source = sources.resolve_source(str(gguf_path), progress=False)
    built = build_int8_prefill(source, window=1024, threads=1, cache_dir=tmp_path)
    saved = cached_path(source, tmp_path)
    assert saved.is_file() and list(tmp_path.iterdir()) == [saved]  # no temporary file left behind
    loaded = build_int8_prefill(source, window=1024, threads=1, cache_dir=tmp_path)
    assert loaded is not built
    none = [np.zeros((0, WIDTH), np.float16)] * LAYERS
    empty = SeqKV(b"", np.zeros(0, np.int32), none, none)  # a slot with nothing cached yet
    ids = prompt(40)
    for a, b in zip(built.kv(empty, ids, 0), loaded.kv(empty, ids, 0), strict=True):
        assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))  # the same int8 weights, bit for bit
    saved.write_bytes(b"damaged")  # a damaged file is deleted and the copy built again
    again = build_int8_prefill(source, window=1024, threads=1, cache_dir=tmp_path)
    assert again.n_layers == LAYERS and saved.is_file() and saved.stat().st_size > 1000
