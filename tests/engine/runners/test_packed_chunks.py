"""The native runner's packed step: every chunk of a forward in one pass over the layers, against each chunk alone
and against the Hugging Face forward, on the tiny random models (no download)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from torch import Tensor, nn
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedModel

from qwen_stream.engine.runners.base import SeqChunk
from qwen_stream.engine.runners.torch_attention import PACKED_MAX_TOKENS, plan_packed
from qwen_stream.engine.runners.torch_native import NativeRunner
from tests.support.tiny_models import SMALL, llama_linear_rope, llama_tied, qwen2, qwen3, randomize, tokens

ATOL, RTOL = 2e-5, 1e-4  # float32


class CountingRunner(NativeRunner):
    """The real runner, counting its passes over the layers."""

    passes = 0

    def _layers_forward(self, *args: Any) -> Tensor:
        self.passes += 1
        return super()._layers_forward(*args)


@dataclass
class Case:
    """One sequence of the step: what its slot holds before, and the chunk it feeds."""

    slot: int
    held: list[int]  # in the slot's cache before the step; past ``start`` it is a stale tail the chunk replaces
    start: int
    chunk: list[int]
    n_logits: int = 1
    want: bool = True

    @property
    def seq(self) -> list[int]:
        return self.held[: self.start] + self.chunk

    def step(self) -> SeqChunk:
        return SeqChunk(self.slot, self.chunk, self.start, self.want, self.n_logits)


def cases(slots: list[int]) -> list[Case]:
    a, b, c, d, e, f, g = slots
    return [
        Case(a, tokens(30, 1), 20, tokens(5, 2), n_logits=5),  # drafts over rejected ones' stale keys (20..29)
        Case(b, tokens(3, 3), 3, tokens(PACKED_MAX_TOKENS, 4), n_logits=PACKED_MAX_TOKENS),  # the longest that packs
        Case(c, tokens(10, 5), 10, [7]),  # a decode row
        Case(d, [], 0, tokens(40, 6)),  # a prompt prefill: attends alone
        Case(e, tokens(41, 7), 41, tokens(2, 8), n_logits=2),
        Case(f, [], 0, tokens(6, 9)),  # a short prompt packs too
        Case(g, tokens(12, 10), 12, tokens(4, 11), want=False),  # no logits: owns no rows of the result
    ]


# Slots of the seven cases: where the packed chunks (a, b, e, f, g) sit decides how their keys are read.
GATHERED = [15, 0, 5, 7, 9, 3, 12]  # packed slots 0, 3, 9, 12, 15: too scattered for a window, gathered
IDLE_INSIDE = [6, 1, 3, 0, 4, 2, 7]  # packed slots 1, 2, 4, 6, 7: the window 1..7, idle slots 3 and 5 padded
CONTIGUOUS = [3, 1, 0, 7, 2, 5, 4]  # packed slots 1..5: the window is the batch


def runner_for(model: nn.Module, max_seq_len: int = 64) -> CountingRunner:
    return CountingRunner(model, max_slots=16, max_seq_len=max_seq_len)


def hold(runner: NativeRunner, step: list[Case]) -> None:
    for case in step:
        if case.held:
            runner.forward([SeqChunk(case.slot, case.held, 0, want_logits=False)])


def alone(runner: NativeRunner, step: list[Case]) -> Tensor:
    """The step the old way: each chunk its own forward (own pass over the layers)."""
    return torch.cat([runner.forward([case.step()]) for case in step])


def reference(model: nn.Module, step: list[Case]) -> Tensor:
    """HF logits, no cache, of the rows the step asks for, in chunk order."""
    rows = []
    with torch.inference_mode():
        for case in step:
            if case.want:
                rows.append(model(torch.tensor([case.seq])).logits[0, -case.n_logits :].float())
    return torch.cat(rows)


def next_decode(runner: NativeRunner, step: list[Case]) -> Tensor:
    """One more token for every sequence after the step: it reads the keys and values the step wrote."""
    return runner.forward([SeqChunk(case.slot, [case.slot + 1], len(case.seq)) for case in step])


def reference_next(model: nn.Module, step: list[Case]) -> Tensor:
    with torch.inference_mode():
        return torch.stack([model(torch.tensor([[*case.seq, case.slot + 1]])).logits[0, -1].float() for case in step])


def assert_close(got: Tensor, want: Tensor) -> None:
    assert got.shape == want.shape
    assert torch.allclose(got, want, atol=ATOL, rtol=RTOL), f"max diff {(got - want).abs().max()}"


@pytest.mark.parametrize("slots", [GATHERED, IDLE_INSIDE, CONTIGUOUS], ids=["gathered", "idle-inside", "window"])
@pytest.mark.parametrize("make", [qwen2, llama_tied, qwen3, llama_linear_rope])
def test_packed_step_equals_each_chunk_alone_and_hf(make: Callable[[], PreTrainedModel], slots: list[int]) -> None:
    step = cases(slots)
    model = make()
    packed, single = runner_for(model), runner_for(make())
    hold(packed, step)
    hold(single, step)
    packed.passes = 0
    out = packed.forward([case.step() for case in step])
    assert packed.passes == 1
    assert out.shape[0] == sum(case.n_logits for case in step if case.want)
    assert_close(out, alone(single, step))
    assert_close(out, reference(model, step))
    # the keys and values the packed step wrote are the ones feeding each chunk alone writes
    after = next_decode(packed, step)
    assert_close(after, next_decode(single, step))
    assert_close(after, reference_next(model, step))


@pytest.mark.parametrize("kinds", [(2,), (0, 1), (2, 5), (0, 4, 2), (3, 4)])
def test_every_mix_of_chunk_kinds_is_one_pass(kinds: tuple[int, ...]) -> None:
    """Decodes only, drafts only, a prefill with drafts: one call of the layer loop each, the right logits."""
    step = [cases(IDLE_INSIDE)[i] for i in kinds]
    model = qwen2()
    runner = runner_for(model)
    hold(runner, step)
    runner.passes = 0
    out = runner.forward([case.step() for case in step])
    assert runner.passes == 1
    assert_close(out, reference(model, step))


def test_dynamic_rope_packed_equals_alone() -> None:
    """Length-dependent RoPE stays per chunk (one call for the decode rows) in a packed step.

    HF's dynamic RoPE keeps state (its frequencies grow with the longest sequence seen and stay), so the chunks
    alone run in the packed step's execution order: the decode, the short chunks by slot, the prompt."""
    rope = {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0}
    config = LlamaConfig(**{**SMALL, "max_position_embeddings": 8}, rope_parameters=rope)
    step = cases(IDLE_INSIDE)
    executed = sorted(step, key=lambda c: (len(c.chunk) > 1, len(c.chunk) > PACKED_MAX_TOKENS, c.slot))
    packed = runner_for(randomize(LlamaForCausalLM(config), 6))
    single = runner_for(randomize(LlamaForCausalLM(config), 6))
    hold(packed, step)
    hold(single, step)
    out = packed.forward([case.step() for case in step])
    rows = dict(zip([id(c) for c in executed if c.want], alone(single, executed).split(
        [c.n_logits for c in executed if c.want]), strict=True))
    assert_close(out, torch.cat([rows[id(c)] for c in step if c.want]))
    assert_close(next_decode(packed, step), next_decode(single, step))


@pytest.mark.parametrize(("slots", "window"), [(GATHERED, None), (IDLE_INSIDE, (1, 8)), (CONTIGUOUS, (1, 6))])
def test_the_layouts_cover_every_way_of_reading_the_keys(slots: list[int], window: tuple[int, int] | None) -> None:
    packs = sorted((c.step() for c in cases(slots) if 1 < len(c.chunk) <= PACKED_MAX_TOKENS), key=lambda c: c.slot)
    plan = plan_packed(packs, group=2, arange=torch.arange(64), dtype=torch.float32)
    assert plan.window == window
    rows = 5 if window is None else window[1] - window[0]
    assert plan.mask.shape == (rows, 1, 2 * PACKED_MAX_TOKENS, max(c.start_pos + len(c.token_ids) for c in packs))
