"""The scheduler with pooled requests (embeddings, scores), no model: where they are admitted, how they are
chunked, how much of a step they take beside running streams (sched/pooled_share.py), and which logits rows are
whose."""

from __future__ import annotations

import numpy as np
import pytest

from qwen_stream.engine.request import Sequence
from qwen_stream.engine.sample.per_sequence import SamplingState
from qwen_stream.engine.sched.pooled_share import MIN_TOKENS, PooledShare
from qwen_stream.engine.sched.scheduler import Scheduler
from qwen_stream.types import PoolingParams, SamplingParams

VOCAB = 100
CHAT = SamplingParams(max_new_tokens=4, temperature=0.0)
EMBED = SamplingParams(max_new_tokens=1, temperature=0.0, pooling=PoolingParams("mean", True))
SCORE = SamplingParams(max_new_tokens=1, temperature=0.0, pooling=PoolingParams(logits_of=(1, 2)))


def seq(name: str, prompt: list[int], params: SamplingParams) -> Sequence:
    return Sequence(name, prompt, params, SamplingState.create(params, prompt, VOCAB), frozenset({0}))


def finish_prefill(scheduler: Scheduler, steps: int = 20) -> None:
    """Run steps, sampling token 5 for every sampled sequence, until nobody is in prefill."""
    for _ in range(steps):
        batch = scheduler.schedule()
        scheduler.postprocess(batch, [[5] for _ in batch.sampled], [[None] for _ in batch.sampled])
        if not any(s.in_prefill for s in scheduler.running):
            return


def test_a_pooled_request_is_chunked_like_any_prompt_and_never_sampled() -> None:
    scheduler = Scheduler(max_slots=2, max_model_len=64, prefill_chunk=8)
    scheduler.add(seq("e", list(range(1, 21)), EMBED))
    sizes = []
    for _ in range(3):
        batch = scheduler.schedule()
        assert batch.sampled == [] and all(c.hidden and not c.want_logits for c in batch.chunks)
        sizes += [len(c.token_ids) for c in batch.chunks]
        scheduler.postprocess(batch, [], [])
    assert sizes == [8, 8, 4]
    (done,) = scheduler.running
    out = scheduler.finish_pooled(done, np.ones(3, np.float32))
    assert out.embedding is not None and out.num_prompt_tokens == 20 and not scheduler.running


def test_a_score_request_wants_its_last_row_and_the_rows_split_by_owner() -> None:
    scheduler = Scheduler(max_slots=3, max_model_len=64, prefill_chunk=64)
    scheduler.add(seq("a", [1, 2, 3], CHAT))
    scheduler.add(seq("s", [4, 5, 6, 7], SCORE))
    scheduler.add(seq("b", [8, 9], CHAT))
    batch = scheduler.schedule()
    assert [s.request_id for s in batch.owners] == ["a", "b", "s"]  # pooled prompts after the others
    assert [s.request_id for s in batch.sampled] == ["a", "b"]
    sampled_rows, scored = batch.logit_rows()
    assert sampled_rows == [0, 1] and [(s.request_id, row) for s, row in scored] == [("s", 2)]
    batch.chunks[0].n_logits = 3  # a drafted check owns several rows: the others move down
    batch.chunks[0].token_ids = [3, 7, 7]
    sampled_rows, scored = batch.logit_rows()
    assert sampled_rows == [0, 1, 2, 3] and [row for _, row in scored] == [4]


def test_a_pooled_request_never_starts_on_a_cached_prefix_and_leaves_its_slot_empty() -> None:
    scheduler = Scheduler(max_slots=2, max_model_len=64, reuse_prefix=True)
    prompt = list(range(1, 30))
    scheduler.add(seq("chat", prompt, CHAT))
    finish_prefill(scheduler)
    chat_slot = scheduler.running[0].slot
    scheduler.abort(["chat"])  # its slot keeps the prompt's KV for reuse
    scheduler.add(seq("e", prompt, EMBED))
    scheduler.schedule()
    (embedding,) = scheduler.running
    assert embedding.slot != chat_slot and embedding.num_cached == 0  # every position computed here
    scheduler.slots.take_freed()
    scheduler.finish_pooled(embedding, np.zeros(2, np.float32))
    assert embedding.slot == -1 and scheduler.slots.take_freed() != []  # forgotten: nothing worth reusing


def test_beside_decoding_streams_pooled_prompts_get_only_their_share() -> None:
    scheduler = Scheduler(max_slots=6, max_model_len=512, prefill_chunk=64)
    for i in range(2):
        scheduler.add(seq(f"chat{i}", [1, 2, 3], CHAT))
    finish_prefill(scheduler)
    for i in range(4):
        scheduler.add(seq(f"e{i}", list(range(1, 200)), EMBED))
    share = scheduler.pooled_share
    allowed = share.allowance(2, scheduler.max_batched_tokens)
    batch = scheduler.schedule()
    pooled_tokens = sum(len(c.token_ids) for c in batch.chunks if c.hidden)
    assert 0 < pooled_tokens == allowed < 64  # two decodes: far less than a chunk of pooled prompt
    scheduler.postprocess(batch, [[5] for _ in batch.sampled], [[None] for _ in batch.sampled])
    for s in list(scheduler.running):
        if not s.pooled:
            scheduler.abort([s.request_id])
    alone = scheduler.schedule()  # no stream decoding: pooled prompts take the step's whole budget
    assert sum(len(c.token_ids) for c in alone.chunks) == min(4 * 64, scheduler.max_batched_tokens)


def test_a_runner_that_cannot_split_prompts_gets_each_pooled_prompt_whole() -> None:
    scheduler = Scheduler(max_slots=2, max_model_len=300, prefill_chunk=8, whole_prompts=True)
    scheduler.add(seq("e", list(range(1, 50)), EMBED))
    batch = scheduler.schedule()
    assert [len(c.token_ids) for c in batch.chunks] == [49] and batch.chunks[0].start_pos == 0


def test_the_share_follows_what_steps_cost() -> None:
    share = PooledShare(256, slowdown=1.3)
    for n, seconds in ((16, 0.100), (20, 0.120), (24, 0.128), (32, 0.160), (40, 0.200)):
        share.record(n, seconds)
    assert share.allowance(16, 256) == 8  # 24 tokens cost 1.28x of 16; 32 would cost 1.6x
    assert share.allowance(0, 256) == 256  # nothing else in the step
    noisy = PooledShare(256)
    noisy.record(16, 0.5)  # measured while the machine was busy elsewhere...
    noisy.record(200, 0.4)  # ... and a big step measured while it was not
    assert noisy.allowance(16, 256) == 16  # never more than the step's own tokens again
    share.record(24, 0.3)  # a size that turned out dear: the share shrinks below it
    assert share.allowance(16, 256) == 5
    dear = PooledShare(256)
    dear.record(16, 0.1)
    dear.record(17, 0.5)  # any token more is dear (llama.cpp's kernels work on blocks of rows)
    assert dear.allowance(16, 256) == MIN_TOKENS  # pooled prompts still move, one token a step
    with pytest.raises(ValueError):
        PooledShare(16, slowdown=0.5)
