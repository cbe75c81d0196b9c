"""Prefix sharing across slots: requests that arrive together with one system prompt compute it once.

The schedule is checked step by step on a scripted runner; the copied KV is checked against a fresh prefill on the
native PyTorch runner (tiny random model) and on llama.cpp (the real SmolLM2 GGUF); a real ChatModel serves
concurrent chats with the GGUF's own system prompt.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import torch

from qwen_stream.engine.runners.base import SeqChunk
from qwen_stream.engine.runners.torch_native import build_torch_runner
from qwen_stream.engine.step import EngineCore
from qwen_stream.types import SamplingParams, TokenOutput
from tests.support.scripted_runners import RewindingRunner
from tests.support.tiny_models import qwen2, tokens

SYSTEM = list(range(1, 21))  # a 20-token "system prompt"
GREEDY = SamplingParams(temperature=0.0, max_new_tokens=2, ignore_eos=True)


class CopyingRunner(RewindingRunner):
    """The scripted runner, able to copy a slot's prefix; records every copy."""

    def __init__(self, max_slots: int = 4) -> None:
        super().__init__(max_slots=max_slots)
        self.copies: list[tuple[int, int, int]] = []

    def copy_prefix(self, src: int, dst: int, length: int) -> None:
        assert src != dst and length <= len(self.held.get(src, [])), "copying positions the source lacks"
        self.held[dst] = self.held[src][:length]
        self.copies.append((src, dst, length))


def drive(core: EngineCore, prompts: list[list[int]]) -> dict[str, list[int]]:
    """Submit every prompt before the first step (they arrive together); step until all finish."""
    outputs: dict[str, list[int]] = {}
    for i, prompt in enumerate(prompts):
        outputs[f"r{i}"] = []
        core.add(f"r{i}", prompt, GREEDY)
    while core.has_work:
        for out in core.step():
            outputs[out.request_id] += out.new_token_ids
    return outputs


def test_requests_arriving_together_compute_a_shared_prefix_once() -> None:
    runner = CopyingRunner()
    core = EngineCore(runner, eos_token_ids=[0], max_running=4, max_model_len=128)
    prompts = [[*SYSTEM, 40 + i, 50 + i] for i in range(3)]
    outputs = drive(core, prompts)
    assert outputs == {f"r{i}": [51 + i, 52 + i] for i in range(3)}  # same answers as without sharing
    # step 1 prefills only the first prompt; the others wait for its prefix, copy it, and prefill two tokens
    first_step = [c for c in runner.fed if c.start_pos == 0]
    assert [len(c.token_ids) for c in first_step] == [len(prompts[0])]
    assert [(dst, n) for _src, dst, n in runner.copies] == [(1, len(SYSTEM)), (2, len(SYSTEM))]
    assert all(src == 0 for src, _dst, _n in runner.copies)
    prefills = [c for c in runner.fed if len(c.token_ids) > 1]
    assert [(c.start_pos, c.token_ids) for c in prefills[1:]] == [(20, [41, 51]), (20, [42, 52])]
    assert core.scheduler.reused_tokens == 2 * len(SYSTEM)


def test_short_shared_prefixes_and_plain_runners_do_not_copy() -> None:
    runner = CopyingRunner()
    core = EngineCore(runner, eos_token_ids=[0], max_running=4, max_model_len=128)
    drive(core, [[1, 2, 3, 10, 11], [1, 2, 3, 20, 21]])  # 3 shared tokens: below the copy threshold
    assert runner.copies == []

    plain = RewindingRunner(max_slots=4)  # can rewind, cannot copy: reuse within a slot only
    core = EngineCore(plain, eos_token_ids=[0], max_running=4, max_model_len=128)
    drive(core, [[*SYSTEM, 40], [*SYSTEM, 41]])
    assert core.scheduler.reused_tokens == 0 and not core.scheduler.share_prefix


def test_a_source_that_ends_before_computing_the_prefix_is_not_waited_for() -> None:
    runner = CopyingRunner()
    core = EngineCore(runner, eos_token_ids=[0], max_running=4, max_model_len=128)
    core.add("a", [*SYSTEM, 40], GREEDY)
    core.add("b", [*SYSTEM, 41], GREEDY)
    core.scheduler.schedule()  # admits both (the batch is dropped: nothing ran); b waits for a's prefix
    waiting = core.scheduler.running[1]
    assert waiting.prefix_source is core.scheduler.running[0]
    core.abort(["a"])
    outputs: list[TokenOutput] = []
    while core.has_work:
        outputs += core.step()
    assert [t for o in outputs for t in o.new_token_ids] == [42, 43]
    assert runner.copies == [] and runner.fed[0].start_pos == 0 and len(runner.fed[0].token_ids) == 21


def test_reset_prefix_cache_forgets_idle_slots() -> None:
    runner = CopyingRunner()
    core = EngineCore(runner, eos_token_ids=[0], max_running=4, max_model_len=128)
    drive(core, [[*SYSTEM, 40]])
    core.reset_prefix_cache()
    runner.fed.clear()
    drive(core, [[*SYSTEM, 40]])
    assert runner.fed[0].start_pos == 0 and core.scheduler.reused_tokens == 0


def test_native_runner_copies_a_prefix_exactly() -> None:
    runner = build_torch_runner(qwen2(), max_slots=3, max_seq_len=64)
    shared, source_tail, new_tail = tokens(12, seed=3), tokens(9, seed=4), tokens(5, seed=5)
    fresh = runner.forward([SeqChunk(2, shared + new_tail, 0)])[0].clone()
    runner.forward([SeqChunk(0, shared + source_tail, 0, want_logits=False)])
    runner.copy_prefix(0, 1, len(shared))
    copied = runner.forward([SeqChunk(1, new_tail, len(shared))])[0].clone()
    assert torch.allclose(copied, fresh, atol=1e-4)
    with pytest.raises(ValueError, match="onto itself"):
        runner.copy_prefix(1, 1, 4)
    with pytest.raises(ValueError, match="cannot copy 30"):
        runner.copy_prefix(1, 2, 30)


@pytest.mark.slow  # the real SmolLM2 GGUF on llama.cpp (tests/engine/conftest.py's gguf_path)
@pytest.mark.llamacpp
def test_llama_cpp_runner_copies_a_prefix(gguf_path: Path) -> None:
    from qwen_stream.engine.runners.llamacpp import LlamaCppRunner

    def same(a: torch.Tensor, b: torch.Tensor) -> bool:
        return int(a.argmax()) == int(b.argmax()) and float(torch.corrcoef(torch.stack([a, b]))[0, 1]) > 0.999

    with LlamaCppRunner(gguf_path, max_slots=4, max_seq_len=128, threads=1) as runner:
        shared, source_tail, new_tail = list(range(300, 330)), list(range(500, 510)), list(range(700, 706))
        fresh = runner.forward([SeqChunk(2, shared + new_tail, 0)])[0].clone()
        source_fresh = runner.forward([SeqChunk(3, shared + source_tail + [43], 0)])[0].clone()
        runner.forward([SeqChunk(0, shared + source_tail, 0, want_logits=False)])
        runner.copy_prefix(0, 1, len(shared))
        # the copy lands with the next decode, which also extends the source: neither may disturb the other
        copied, source_after = runner.forward([SeqChunk(1, new_tail, len(shared)),
                                               SeqChunk(0, [43], len(shared) + len(source_tail))]).clone()
        assert runner.slot_length(1) == len(shared) + len(new_tail)
        assert same(copied, fresh)
        assert same(source_after, source_fresh)
        with pytest.raises(ValueError, match="cannot copy 99"):
            runner.copy_prefix(0, 1, 99)


@pytest.mark.slow  # the real SmolLM2 GGUF on llama.cpp (tests/engine/conftest.py's gguf_path)
@pytest.mark.llamacpp
def test_concurrent_chats_share_the_system_prompt(gguf_path: Path) -> None:
    from qwen_stream.api import ChatModel

    model = ChatModel.load(str(gguf_path), context_length=256, max_batch_size=4, threads=1, progress=False)
    try:
        questions = ["Name a colour.", "Name a fruit.", "Name an animal."]
        system_tokens = len(model.inputs.prompter.build([{"role": "user", "content": ""}], max_prompt_tokens=200).ids)
        copies: list[int] = []
        copy_prefix = model.runner.copy_prefix  # the real copy, counted (reuse within one slot never copies)

        def counted_copy(src: int, dst: int, length: int) -> None:
            copies.append(length)
            copy_prefix(src, dst, length)

        model.runner.copy_prefix = counted_copy  # type: ignore[method-assign]
        answers: dict[str, str] = {}
        start = threading.Barrier(len(questions))

        def ask(q: str) -> None:
            start.wait()
            answers[q], _ = model.chat(q, history=None, temperature=0.0, max_new_tokens=8)

        threads = [threading.Thread(target=ask, args=(q,)) for q in questions]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert all(answers.get(q, "").strip() for q in questions)
        # the ones that arrived while another held the system prompt copied it instead of computing it again
        assert copies and all(n >= system_tokens // 2 for n in copies)
        assert model.engine.stats().reused_prompt_tokens >= sum(copies)
    finally:
        model.close()
