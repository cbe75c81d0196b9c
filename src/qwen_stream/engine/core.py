"""One engine step: schedule, run the model, sample, postprocess. Single-threaded; the Engine drives it.

Token ids only, and no callbacks: every call returns the TokenOutputs it produced, keyed by request id; the
Engine thread routes them to each request's consumer.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch

from qwen_stream.engine.constraints import mask_constrained
from qwen_stream.engine.runner import ModelRunner
from qwen_stream.engine.sampler import SamplingState, sample_batch, token_logprobs
from qwen_stream.engine.scheduler import ScheduledBatch, Scheduler, SeqStatus, Sequence
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


class EngineCore:
    def __init__(self, runner: ModelRunner, *, eos_token_ids: Seq[int], max_running: int,
                 max_model_len: int, prefill_chunk: int = 512, reuse_prefix: bool = True) -> None:
        self.runner = runner
        self.stop_ids = frozenset(int(t) for t in eos_token_ids)
        # Only a runner that can restart a slot inside its cached part can keep finished slots' KV for reuse.
        reuse_prefix = reuse_prefix and bool(getattr(runner, "can_rewind", False))
        # ... and only one that can copy a slot's prefix into another can share one prompt prefix across slots.
        share_prefix = reuse_prefix and callable(getattr(runner, "copy_prefix", None))
        self.scheduler = Scheduler(max_slots=min(max_running, runner.max_slots), max_model_len=max_model_len,
                                   prefill_chunk=prefill_chunk, reuse_prefix=reuse_prefix, share_prefix=share_prefix)
        self.timings = StepTimings()

    def add(self, request_id: str, prompt_ids: list[int], params: SamplingParams) -> None:
        sampling = SamplingState.create(params, prompt_ids, self.runner.vocab_size)
        stop_ids = self.stop_ids | frozenset(params.stop_token_ids)
        self.scheduler.add(Sequence(request_id, prompt_ids, params, sampling, stop_ids))

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
        if batch.empty:
            return []
        try:
            for copy in batch.copies:
                self.runner.copy_prefix(copy.src, copy.dst, copy.length)  # type: ignore[attr-defined]
            logits = self.runner.forward(batch.chunks)  # [len(batch.sampled), vocab]
        except Exception as exc:  # a failed step must end its requests, not hang them
            logger.exception("model step failed")
            return self.fail_running(f"model step failed: {exc}")
        forwarded = time.perf_counter()
        states = [seq.sampling for seq in batch.sampled]
        if mask_constrained(logits, states):
            self.timings.constrain_s += time.perf_counter() - forwarded
        tokens, logprobs, failed = self._sample(logits, batch.sampled)
        outputs: list[TokenOutput] = []
        if failed:
            batch.sampled = [seq for seq in batch.sampled if seq not in failed]  # rows pair with tokens again
            outputs = self.scheduler.fail(failed)
        outputs += self._postprocess(batch, tokens, logprobs)
        self._free_slots()
        self._account(started, forwarded, len(tokens))
        return outputs

    def _sample(self, logits: torch.Tensor, seqs: list[Sequence]) -> tuple[list[int], list[TokenLogprob | None],
                                                                          dict[Sequence, str]]:
        """One token (and its logprobs) per sampled row; a row that fails fails its own request only."""
        tokens: list[int] = []
        logprobs: list[TokenLogprob | None] = []
        failed: dict[Sequence, str] = {}
        for i, (seq, token) in enumerate(zip(seqs, sample_batch(logits, [s.sampling for s in seqs]), strict=True)):
            try:
                if isinstance(token, Exception):
                    raise token
                logprob = token_logprobs(logits[i], token, seq.params.logprobs) if seq.params.logprobs is not None \
                    else None
            except Exception as exc:
                logger.warning("sampling failed for request %s: %s", seq.request_id, exc)
                failed[seq] = f"sampling failed: {exc}"
                continue
            tokens.append(token)
            logprobs.append(logprob)
        return tokens, logprobs, failed

    def _postprocess(self, batch: ScheduledBatch, tokens: list[int], logprobs: list[TokenLogprob | None]) -> list[TokenOutput]:
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

    def _account(self, started: float, forwarded: float, n_tokens: int) -> None:
        now = time.perf_counter()
        t = self.timings
        t.steps += 1
        t.forward_s += forwarded - started
        t.sample_s += now - forwarded
        t.total_s += now - started
        t.tokens += n_tokens
