"""One engine step: schedule, run the model, sample, postprocess. Single-threaded; the Engine drives it.

Pooled requests (embeddings, scores) share the step: their chunks go in the same forward (``forward_with_hidden``
when one wants hidden states), their rows are pooled instead of sampled (engine/pooling.py), and each ends with one
output carrying its vector.

Token ids only, and no callbacks: every call returns the TokenOutputs it produced, keyed by request id; the
Engine thread routes them to each request's consumer.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

import torch

from qwen_stream.engine.config import DEFAULT_CACHE_REUSE
from qwen_stream.engine.pooling import Pooler, runner_tasks, score_vector
from qwen_stream.engine.prompt_cache.store import PromptStore
from qwen_stream.engine.prompt_cache.transfer import PromptTransfer
from qwen_stream.engine.request import ScheduledBatch, SeqStatus, Sequence
from qwen_stream.engine.runners.base import ModelRunner
from qwen_stream.engine.sample.grammar_masks import mask_constrained
from qwen_stream.engine.sample.per_sequence import SamplingState, token_logprobs
from qwen_stream.engine.sample.step_rows import SampleRow, sample_rows
from qwen_stream.engine.sched.cache_reuse import policy_for
from qwen_stream.engine.sched.kv_budget import KVBudget
from qwen_stream.engine.sched.prefill_path import paths_for
from qwen_stream.engine.sched.scheduler import Scheduler
from qwen_stream.engine.spec.draft_model import ModelDrafter
from qwen_stream.engine.spec.drafting import SpeculationConfig
from qwen_stream.engine.spec.verify import accept_greedy, position_seed
from qwen_stream.types import SamplingParams, TokenLogprob, TokenOutput

logger = logging.getLogger(__name__)


@dataclass(slots=True)
class StepTimings:
    """Running totals, read by stats and benchmarks (how much of a step the model takes vs the rest)."""

    steps: int = 0
    forward_s: float = 0.0
    sample_s: float = 0.0  # includes constrain_s
    constrain_s: float = 0.0  # grammar masks of constrained rows (structured output, forced tool calls)
    total_s: float = 0.0
    tokens: int = 0
    drafted: int = 0  # speculation: tokens drafted and checked ...
    accepted: int = 0  # ... and how many of them the model agreed with


class EngineCore:
    def __init__(self, runner: ModelRunner, *, eos_token_ids: Seq[int], max_running: int,
                 max_model_len: int, prefill_chunk: int = 512, reuse_prefix: bool = True,
                 speculate: SpeculationConfig | None = None, drafter: ModelDrafter | None = None,
                 prompt_cache: PromptStore | None = None, cache_reuse: int = DEFAULT_CACHE_REUSE) -> None:
        self.runner = runner
        self.stop_ids = frozenset(int(t) for t in eos_token_ids)
        # Only a runner that can restart a slot inside its cached part can keep finished slots' KV for reuse.
        reuse_prefix = reuse_prefix and bool(getattr(runner, "can_rewind", False))
        # ... and only one that can copy a slot's prefix into another can share one prompt prefix across slots.
        share_prefix = reuse_prefix and callable(getattr(runner, "copy_prefix", None))
        if prompt_cache is not None and not reuse_prefix:  # a load is prefix reuse from disk
            raise ValueError("a prompt cache on disk needs prefix caching on, and a runner that can rewind a slot")
        # prompts saved on disk: loaded into slots before the forward, saved after their last chunk (prompt_cache/)
        self.prompt_transfer = PromptTransfer(runner, prompt_cache) if prompt_cache is not None else None
        # Rejected drafts are undone by rewinding the slot, which needs the same runner ability as prefix reuse.
        self.speculate = speculate if getattr(runner, "can_rewind", False) else None
        total = getattr(runner, "kv_budget", None)  # a runner whose slots share one pool of KV cells
        budget = KVBudget(total, slack=self.speculate.max_draft if self.speculate else 0) if total else None
        self.scheduler = Scheduler(max_slots=min(max_running, runner.max_slots), max_model_len=max_model_len,
                                   prefill_chunk=prefill_chunk, reuse_prefix=reuse_prefix, share_prefix=share_prefix,
                                   speculate=self.speculate, kv_budget=budget,
                                   drafter=drafter if self.speculate else None,
                                   whole_prompts=bool(getattr(runner, "whole_prompts", False)),
                                   prompt_cache=prompt_cache,
                                   cache_reuse=policy_for(runner, cache_reuse, max_fill=prefill_chunk),
                                   prefill_paths=paths_for(runner))
        self.tasks = runner_tasks(runner)  # what it serves: generate, embed, score
        self.drafter = self.scheduler.speculator.drafter if self.scheduler.speculator else None
        self.timings = StepTimings()

    def add(self, request_id: str, prompt_ids: list[int], params: SamplingParams) -> None:
        sampling = SamplingState.create(params, prompt_ids, self.runner.vocab_size)
        stop_ids = self.stop_ids | frozenset(params.stop_token_ids)
        seq = Sequence(request_id, prompt_ids, params, sampling, stop_ids)
        if params.pooling is not None and not params.pooling.logits_of:
            seq.pooler = Pooler(params.pooling)
        seq.seed = params.seed if params.seed is not None else int.from_bytes(os.urandom(8), "little") >> 1
        self.scheduler.add(seq)

    def abort(self, request_ids: list[str]) -> list[TokenOutput]:
        outputs = self.scheduler.abort(request_ids)
        self._free_slots()
        return outputs

    def fail_running(self, message: str) -> list[TokenOutput]:
        """End every running request with ``message`` (their KV is forgotten); waiting ones stay queued."""
        outputs = self.scheduler.fail_running(message)
        self._free_slots()
        return outputs

    def reset_prefix_cache(self) -> None:
        """Forget the KV that idle slots keep for prefix reuse."""
        self.scheduler.slots.forget_cached()
        self._free_slots()

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    def step(self) -> list[TokenOutput]:
        started = time.perf_counter()
        batch = self.scheduler.schedule()
        self._free_slots()  # caches evicted to make room (KV budget) must be gone before the forward fills it
        if self.prompt_transfer is not None and batch.loads:  # saved prompts into their slots, before the forward
            for seq in self.prompt_transfer.apply_loads(batch):
                self.scheduler.load_failed(seq, batch)  # a cold prefill instead, from the next step
        if batch.empty:
            return []
        try:
            for shift in batch.shifts:  # before the copies: one may read a slot that moves its KV this step
                self.runner.shift_kv(shift)  # type: ignore[attr-defined]
            for copy in batch.copies:
                self.runner.copy_prefix(copy.src, copy.dst, copy.length)  # type: ignore[attr-defined]
            before = time.perf_counter()
            logits, hidden = self._forward(batch)  # logits: [rows of the chunks that want them, vocab]
        except Exception as exc:  # a failed step must end its requests, not hang them
            logger.exception("model step failed")
            return self.fail_running(f"model step failed: {exc}")
        forwarded = time.perf_counter()
        fed = sum(len(c.token_ids) for c in batch.chunks)
        if fed and self.scheduler.prefill_paths is not None:  # prompt tokens' cost on the way they went
            self.scheduler.prefill_paths.record(batch.chunks, forwarded - before)
        if fed and not any(c.fast for c in batch.chunks):  # the tables below price llama.cpp's own forwards
            self.scheduler.pooled_share.record(fed, forwarded - before)  # what pooled prompts beside streams cost
            if self.scheduler.speculator is not None:  # what a forward of this many tokens costs: drafting's prices
                self.scheduler.speculator.step_cost.record(fed, forwarded - before)
        sample_rows, scored = batch.logit_rows()
        completed = self._keep_prompt_logits(batch, logits, sample_rows)
        if self.prompt_transfer is not None and completed:
            self.prompt_transfer.save_prompts(completed)  # a slot that just completed its prompt holds exactly it
        pooled, pool_failed = self._pool(batch, hidden, logits, scored)
        if scored:  # the sampled sequences' rows, in order, without the score requests' rows between them
            logits = logits[torch.tensor(sample_rows, dtype=torch.long, device=logits.device)]
        if batch.recalled:  # exact repeats' first rows, kept from their first run, after the forward's rows
            kept = torch.stack([seq.prompt_logits for seq in batch.recalled]).to(logits.dtype)
            logits = torch.cat([logits, kept.to(logits.device)]) if logits.numel() else kept
        tokens, logprobs, failed = self._sample(logits, batch.sampled, forwarded)
        outputs: list[TokenOutput] = []
        if failed or pool_failed:
            batch.sampled = [seq for seq in batch.sampled if seq not in failed]  # rows pair with tokens again
            outputs = self.scheduler.fail({**failed, **pool_failed})
        outputs += self._postprocess(batch, tokens, logprobs)
        outputs += [self.scheduler.finish_pooled(seq, vector) for seq, vector in pooled
                    if seq.status is SeqStatus.RUNNING]
        self._free_slots()
        self._account(started, forwarded, sum(len(kept) for kept in tokens))
        return outputs

    def _keep_prompt_logits(self, batch: ScheduledBatch, logits: torch.Tensor,
                            sample_rows: list[int]) -> list[Sequence]:
        """A copy of each row that ends a prompt this step (before sampling masks rows in place), kept with the
        sequence and then with its slot's KV: an exact repeat samples from it instead of recomputing (Scheduler).
        Returns the sequences whose prompt completed this step (the prompt cache saves those)."""
        if not self.scheduler.reuse_prefix:
            return []
        row, completed = 0, []
        for seq in batch.sampled[:len(batch.sampled) - len(batch.recalled)]:
            if not seq.output_ids and seq.prompt_logits is None:  # its prompt's last chunk ran this step
                seq.prompt_logits = logits[sample_rows[row]].detach().clone()
                completed.append(seq)
            row += 1 + len(seq.draft)
        return completed

    def _forward(self, batch: ScheduledBatch) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The step's logits, and the hidden states of its embedding chunks (in chunk order)."""
        if not batch.chunks:  # only exact repeats, whose rows were kept
            return torch.empty(0), []
        if any(chunk.hidden for chunk in batch.chunks):
            return self.runner.forward_with_hidden(batch.chunks)  # type: ignore[attr-defined]
        return self.runner.forward(batch.chunks), []

    def _pool(self, batch: ScheduledBatch, hidden: list[torch.Tensor], logits: torch.Tensor,
              scored: list[tuple[Sequence, int]]) -> tuple[list[tuple[Sequence, Any]], dict[Sequence, str]]:
        """Feed each embedding chunk's hidden rows to its pooler; the pooled requests whose prompt this step
        completes, with their vectors (a score request's from its last logits row). A failure fails its own."""
        done: list[tuple[Sequence, Any]] = []
        failed: dict[Sequence, str] = {}
        for (seq, chunk), rows in zip(batch.hidden, hidden, strict=True):
            try:
                if seq.pooler is not None:
                    seq.pooler.add(rows, chunk.start_pos)
                    if chunk.start_pos + len(chunk.token_ids) == len(seq.prompt_ids):
                        done.append((seq, seq.pooler.result()))
            except Exception as exc:
                logger.warning("pooling failed for request %s: %s", seq.request_id, exc)
                failed[seq] = f"pooling failed: {exc}"
        for seq, row in scored:
            try:
                done.append((seq, score_vector(logits[row], seq.params.pooling.logits_of)))  # type: ignore[union-attr]
            except Exception as exc:
                failed[seq] = f"scoring failed: {exc}"
        return [(seq, vector) for seq, vector in done if seq not in failed], failed

    def _sample(self, logits: torch.Tensor, seqs: list[Sequence], forwarded: float
                ) -> tuple[list[list[int]], list[list[TokenLogprob | None]], dict[Sequence, str]]:
        """The tokens each sampled sequence keeps (one, or 1..k+1 after drafts) and their logprobs. Every row of
        the step, drafted or not, is sampled in one batch; a row that fails fails its own request only."""
        pairs = _rows_by_seq(logits, seqs)
        # drafts are never made for constrained sequences (scheduler), so a grammar masks a sequence's only row
        row_states = [row for seq in seqs for row in [None if seq.draft else seq.sampling, *[None] * len(seq.draft)]]
        if mask_constrained(logits, row_states):
            self.timings.constrain_s += time.perf_counter() - forwarded
        results = sample_rows(logits, [row for seq in seqs for row in _sample_rows(seq)])
        tokens: list[list[int]] = []
        logprobs: list[list[TokenLogprob | None]] = []
        failed: dict[Sequence, str] = {}
        start = 0
        for seq, rows in pairs:
            try:
                kept = self._accept(seq, results[start:start + len(rows)])
                kept_logprobs = self._logprobs(rows, seq, kept)
            except Exception as exc:
                logger.warning("sampling failed for request %s: %s", seq.request_id, exc)
                failed[seq] = f"sampling failed: {exc}"
                continue
            finally:
                start += len(rows)
            tokens.append(kept)
            logprobs.append(kept_logprobs)
        return tokens, logprobs, failed

    def _accept(self, seq: Sequence, sampled: list[int | Exception]) -> list[int]:
        """The tokens seq keeps: sampled[i] is the model's token after the fed token and i drafts, chosen exactly
        as plain decoding would choose it (same penalties, same per-position random stream), so the drafts agreeing
        with it are kept up to the first that does not, and the text does not depend on drafting. A row that failed
        (NaN logits) fails the request even past a rejected draft: the model is broken there too."""
        draft = seq.draft
        tokens: list[int] = []
        for token in sampled:
            if isinstance(token, Exception):
                raise token
            tokens.append(token)
        kept = accept_greedy(draft, tokens)  # per position the model's own choice, sampled or argmax alike
        if draft:
            self.timings.drafted += len(draft)
            self.timings.accepted += len(kept) - 1
        return kept

    def _logprobs(self, rows: torch.Tensor, seq: Sequence, kept: list[int]) -> list[TokenLogprob | None]:
        if seq.params.logprobs is None:
            return [None] * len(kept)
        return [token_logprobs(rows[i], token, seq.params.logprobs) for i, token in enumerate(kept)]

    def _postprocess(self, batch: ScheduledBatch, tokens: list[list[int]],
                     logprobs: list[list[TokenLogprob | None]]) -> list[TokenOutput]:
        """Record the sampled tokens; a failure here (a bug) fails this step's requests, not the engine."""
        try:
            return self.scheduler.postprocess(batch, tokens, logprobs)
        except Exception as exc:
            logger.exception("postprocessing the step failed")
            # batch.sampled: their outputs were not delivered, even those already finished; owners still running
            # (in prefill) share the step. Rows that failed to sample were delivered already.
            sampled = set(batch.sampled)
            hit = [seq for seq in dict.fromkeys(batch.owners) if seq in sampled or seq.status is SeqStatus.RUNNING]
            return self.scheduler.fail({seq: f"postprocessing failed: {exc}" for seq in hit})

    def _free_slots(self) -> None:
        for slot in self.scheduler.slots.take_freed():
            self.runner.free_slot(slot)
            if self.drafter is not None:  # the draft model's slot holds the same tokens
                self.drafter.free_slot(slot)

    def _account(self, started: float, forwarded: float, n_tokens: int) -> None:
        now = time.perf_counter()
        t = self.timings
        t.steps += 1
        t.forward_s += forwarded - started
        t.sample_s += now - forwarded
        t.total_s += now - started
        t.tokens += n_tokens


def _rows_by_seq(logits: torch.Tensor, seqs: list[Sequence]) -> list[tuple[Sequence, torch.Tensor]]:
    """Each sampled sequence with its logits rows: 1 + len(draft) of them, in order."""
    pairs, row = [], 0
    for seq in seqs:
        n = 1 + len(seq.draft)
        pairs.append((seq, logits[row:row + n]))
        row += n
    return pairs


def _sample_rows(seq: Sequence) -> list[SampleRow]:
    """The rows seq samples this step: position i counts drafts before it as generated, as if they were kept,
    and draws from that position's own random stream."""
    first, state = len(seq.output_ids), seq.sampling
    seeds = [None if state.params.greedy else position_seed(seq.seed, first + i) for i in range(1 + len(seq.draft))]
    return [SampleRow(state, seq.draft[:i], seed) for i, seed in enumerate(seeds)]
