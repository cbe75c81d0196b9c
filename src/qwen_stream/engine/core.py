"""One engine step: schedule, run the model, sample, postprocess. Single-threaded; the Engine drives it.

Token ids only, and no callbacks: every call returns the TokenOutputs it produced, keyed by request id; the
Engine thread routes them to each request's consumer.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch

from qwen_stream.engine.constraints import mask_constrained
from qwen_stream.engine.draft_model import ModelDrafter
from qwen_stream.engine.drafting import SpeculationConfig
from qwen_stream.engine.kv_budget import KVBudget
from qwen_stream.engine.runner import ModelRunner
from qwen_stream.engine.sampler import SamplingState, check_logits, sample_batch, sample_row, token_logprobs
from qwen_stream.engine.scheduler import ScheduledBatch, Scheduler, SeqStatus, Sequence
from qwen_stream.engine.verify import accept_greedy, position_seed
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
                 speculate: SpeculationConfig | None = None, drafter: ModelDrafter | None = None) -> None:
        self.runner = runner
        self.stop_ids = frozenset(int(t) for t in eos_token_ids)
        # Only a runner that can restart a slot inside its cached part can keep finished slots' KV for reuse.
        reuse_prefix = reuse_prefix and bool(getattr(runner, "can_rewind", False))
        # ... and only one that can copy a slot's prefix into another can share one prompt prefix across slots.
        share_prefix = reuse_prefix and callable(getattr(runner, "copy_prefix", None))
        # Rejected drafts are undone by rewinding the slot, which needs the same runner ability as prefix reuse.
        self.speculate = speculate if getattr(runner, "can_rewind", False) else None
        total = getattr(runner, "kv_budget", None)  # a runner whose slots share one pool of KV cells
        budget = KVBudget(total, slack=self.speculate.max_draft if self.speculate else 0) if total else None
        self.scheduler = Scheduler(max_slots=min(max_running, runner.max_slots), max_model_len=max_model_len,
                                   prefill_chunk=prefill_chunk, reuse_prefix=reuse_prefix, share_prefix=share_prefix,
                                   speculate=self.speculate, kv_budget=budget,
                                   drafter=drafter if self.speculate else None)
        self.drafter = self.scheduler.speculator.drafter if self.scheduler.speculator else None
        self.timings = StepTimings()

    def add(self, request_id: str, prompt_ids: list[int], params: SamplingParams) -> None:
        sampling = SamplingState.create(params, prompt_ids, self.runner.vocab_size)
        stop_ids = self.stop_ids | frozenset(params.stop_token_ids)
        seq = Sequence(request_id, prompt_ids, params, sampling, stop_ids)
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
        self.scheduler.forget_cached()
        self._free_slots()

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    def step(self) -> list[TokenOutput]:
        started = time.perf_counter()
        batch = self.scheduler.schedule()
        self._free_slots()  # caches evicted to make room (KV budget) must be gone before the forward fills it
        if batch.empty:
            return []
        try:
            for copy in batch.copies:
                self.runner.copy_prefix(copy.src, copy.dst, copy.length)  # type: ignore[attr-defined]
            before = time.perf_counter()
            logits = self.runner.forward(batch.chunks)  # [len(batch.sampled), vocab]
        except Exception as exc:  # a failed step must end its requests, not hang them
            logger.exception("model step failed")
            return self.fail_running(f"model step failed: {exc}")
        forwarded = time.perf_counter()
        if self.scheduler.speculator is not None:  # what a forward of this many tokens costs: drafting's prices
            self.scheduler.speculator.step_cost.record(sum(len(c.token_ids) for c in batch.chunks), forwarded - before)
        tokens, logprobs, failed = self._sample(logits, batch.sampled, forwarded)
        outputs: list[TokenOutput] = []
        if failed:
            batch.sampled = [seq for seq in batch.sampled if seq not in failed]  # rows pair with tokens again
            outputs = self.scheduler.fail(failed)
        outputs += self._postprocess(batch, tokens, logprobs)
        self._free_slots()
        self._account(started, forwarded, sum(len(kept) for kept in tokens))
        return outputs

    def _sample(self, logits: torch.Tensor, seqs: list[Sequence], forwarded: float
                ) -> tuple[list[list[int]], list[list[TokenLogprob | None]], dict[Sequence, str]]:
        """The tokens each sampled sequence keeps (one, or 1..k+1 after drafts) and their logprobs; a row that
        fails fails its own request only."""
        pairs = _rows_by_seq(logits, seqs)
        results: list[list[int] | int | Exception]
        if any(seq.draft for seq in seqs):
            results = [self._verify_guarded(seq, rows) for seq, rows in pairs]
        else:
            results = list(self._sample_one_each(logits, seqs, forwarded))
        tokens: list[list[int]] = []
        logprobs: list[list[TokenLogprob | None]] = []
        failed: dict[Sequence, str] = {}
        for (seq, rows), result in zip(pairs, results, strict=True):
            try:
                if isinstance(result, Exception):
                    raise result
                kept = result if isinstance(result, list) else [result]
                kept_logprobs = self._logprobs(rows, seq, kept)
            except Exception as exc:
                logger.warning("sampling failed for request %s: %s", seq.request_id, exc)
                failed[seq] = f"sampling failed: {exc}"
                continue
            tokens.append(kept)
            logprobs.append(kept_logprobs)
        return tokens, logprobs, failed

    def _sample_one_each(self, logits: torch.Tensor, seqs: list[Sequence], forwarded: float) -> list[int | Exception]:
        """No drafts this step: one row per sequence, sampled together (greedy rows in one argmax)."""
        states = [seq.sampling for seq in seqs]
        if mask_constrained(logits, states):
            self.timings.constrain_s += time.perf_counter() - forwarded
        for seq in seqs:
            _seed_position(seq, len(seq.output_ids))
        return sample_batch(logits, states)

    def _verify_guarded(self, seq: Sequence, rows: torch.Tensor) -> list[int] | Exception:
        try:
            return self._verify(seq, rows)
        except Exception as exc:  # this sequence's failure is its own
            return exc

    def _verify(self, seq: Sequence, rows: torch.Tensor) -> list[int]:
        """The tokens seq keeps this step: rows [1 + len(draft), vocab] are the model's logits after the fed token
        and after each draft. Each position is sampled exactly as plain decoding would sample it (same penalties,
        same per-position random stream) and compared with the draft, so the text does not depend on drafting."""
        draft, state = seq.draft, seq.sampling
        if not draft:
            mask_constrained(rows, [state])
        if state.params.greedy and state.output_counts is None and not state.params.logit_bias:
            check_logits(rows)  # as sample_row does: argmax would pick a NaN as the best token
            kept = accept_greedy(draft, rows.argmax(dim=-1).tolist())
        else:
            kept = []
            for i in range(len(rows)):
                _seed_position(seq, len(seq.output_ids) + i)
                token = sample_row(rows[i], state)
                kept.append(token)
                if i == len(draft) or token != draft[i]:
                    break
                state.record(token)  # the next position's penalties see it, as in plain decoding
            _unrecord(state, kept[:-1])  # the scheduler records every kept token once more
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
        for slot in self.scheduler.take_freed():
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


def _seed_position(seq: Sequence, position: int) -> None:
    """A sampled sequence draws the token at each position from that position's own random stream."""
    if not seq.sampling.params.greedy:
        seq.sampling.generator.manual_seed(position_seed(seq.seed, position))


def _unrecord(state: SamplingState, tokens: list[int]) -> None:
    if state.output_counts is not None:
        for token in tokens:
            state.output_counts[token] -= 1
