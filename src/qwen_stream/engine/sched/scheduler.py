"""Which sequences run this step: admission into KV slots, prefill chunks, batched decode, finishing.

The scheduler's contract is two calls, as in nano-vllm: ``schedule()`` says what to feed the runner, and
``postprocess()`` takes the sampled tokens back, decides who finished and frees their slots. Token ids only.

Prefix reuse (``reuse_prefix``, for runners that can rewind a slot): a finished sequence's slot keeps its KV, and
the scheduler remembers which tokens it holds. A new request goes to the free slot sharing the longest prefix with
its prompt and prefills only the rest, so turn N of a conversation does not recompute turns 1..N-1 (llama.cpp's
server does the same per slot). With no shared prefix it takes an empty slot, else the least recently used one.
The slot also keeps the logits row after its last prompt, so an exact repeat of that prompt (a retry, Regenerate)
computes nothing: its first token is sampled from that row (``recalled``), bit for bit as the first time.

Prefix sharing across slots (``share_prefix``, for runners that can also copy a slot's prefix): when a running
sequence holds (or is about to compute) a longer prefix of the new prompt than any free slot, e.g. the same system
prompt from another user, the new sequence waits until that prefix is computed, gets a copy of it, and prefills
only the rest. Sixteen requests with one system prompt then compute it once, not sixteen times.

Speculation (``speculate``, for runners that can rewind): a decoding sequence's chunk becomes ``[last token,
drafts...]`` with logits for every position (speculator.py says where drafts come from, prompt lookup or a draft
model, and how many are worth it); postprocess takes the 1..k+1 tokens the check kept, and the KV of rejected
drafts is simply overwritten by the next chunk, which starts right after the last kept token (both runners rewind a
slot on demand).

Pooled requests (embeddings and scores, ``params.pooling``) are prompts only: admitted into a slot like any other
(never onto a cached prefix: every position's hidden state is needed, computed alone as in any batch), prefilled in
chunks within the step's token budget after every decode, so a flood of them never holds back a running stream,
and finished by ``finish_pooled`` once their last chunk ran, their slot emptied for the next one. A runner that
cannot split a prompt (``whole_prompts``: bidirectional attention) gets each prompt in one chunk.

Cache reuse (``cache_reuse``, for runners that can move KV: llama-server's ``--cache-reuse``): past the shared
prefix, runs of the slot's cached tokens that come next in the prompt (an editor's suffix after the cursor) move to
their new positions instead of being computed again (cache_reuse.py plans it, ``ScheduledBatch.shifts`` carries it
to the runner before the forward). Never for a request with a seed, which also never reuses moved cells.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from qwen_stream.engine.request import PrefixCopy, ScheduledBatch, SeqStatus, Sequence
from qwen_stream.engine.runners.base import KVShift, SeqChunk
from qwen_stream.engine.sample.grammar_masks import advance, grammar_ended
from qwen_stream.engine.sched.cache_reuse import CacheReuse
from qwen_stream.engine.sched.kv_budget import KVBudget
from qwen_stream.engine.sched.pooled_share import PooledShare
from qwen_stream.engine.sched.slot_pool import SlotPool, shared_prefix
from qwen_stream.engine.spec.drafting import SpeculationConfig
from qwen_stream.engine.spec.speculator import Speculator
from qwen_stream.types import FinishReason, TokenLogprob, TokenOutput

if TYPE_CHECKING:
    import numpy as np

if TYPE_CHECKING:
    from qwen_stream.engine.spec.draft_model import ModelDrafter


class Scheduler:
    def __init__(self, *, max_slots: int, max_model_len: int, prefill_chunk: int = 512,
                 max_batched_tokens: int = 2048, reuse_prefix: bool = False, share_prefix: bool = False,
                 min_shared_tokens: int = 16, speculate: SpeculationConfig | None = None,
                 kv_budget: KVBudget | None = None, drafter: ModelDrafter | None = None,
                 whole_prompts: bool = False, cache_reuse: CacheReuse | None = None) -> None:
        self.max_slots = max_slots
        self.whole_prompts = whole_prompts  # the runner needs each prompt in one chunk (an encoder)
        self.max_model_len = max_model_len
        self.prefill_chunk = prefill_chunk
        self.max_batched_tokens = max(max_batched_tokens, prefill_chunk)
        self.reuse_prefix = reuse_prefix
        self.share_prefix = share_prefix and reuse_prefix
        # A copy moves a whole slot's KV on some runners (llama.cpp): worth it only for a prefix this long.
        self.min_shared_tokens = max(1, min_shared_tokens)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.slots = SlotPool(max_slots, reuse_prefix=reuse_prefix, kv_budget=kv_budget)
        self.reused_tokens = 0  # prompt tokens served from a slot's KV instead of prefilled, in total
        self.speculate = speculate  # only for runners that rewind a slot: that is how rejected drafts are undone
        self.speculator = Speculator(speculate, max_model_len, drafter) if speculate else None
        self.kv_budget = kv_budget  # None: every slot owns a full window of KV (kv_budget.py)
        self.pooled_share = PooledShare(self.max_batched_tokens)  # pooled prompts beside streams (pooled_share.py)
        self.cache_reuse = cache_reuse if reuse_prefix else None  # None: the runner cannot move KV (cache_reuse.py)
        self.shifted_tokens = 0  # of reused_tokens, those moved into place past the prefix (cache reuse)
        self._shifts: list[KVShift] = []  # planned at admission, handed to the next batch

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        if self.speculator is not None and not seq.pooled:
            self.speculator.start(seq)
        self.waiting.append(seq)

    def schedule(self) -> ScheduledBatch:
        self._admit()
        batch = ScheduledBatch()
        batch.shifts, self._shifts = self._shifts, []
        budget = self.max_batched_tokens
        # Decodes first: a running stream never waits behind someone else's prompt.
        recalled = []
        for seq in self.running:
            if seq.recalled and not seq.output_ids:  # an exact repeat: its first token needs no forward
                recalled.append(seq)
            elif not seq.in_prefill:
                batch.add(seq, SeqChunk(seq.slot, [seq.output_ids[-1]], seq.num_tokens - 1))
                budget -= 1
        decoding = bool(batch.chunks)
        for seq in self.running:
            if seq.in_prefill and not seq.pooled and budget > 0 and self._prefix_ready(seq, batch):
                budget -= self._schedule_prefill(seq, batch, budget)
        pooled = [seq for seq in self.running if seq.pooled and seq.in_prefill]
        if pooled and budget > 0:
            fed = self.max_batched_tokens - budget
            allowance = self.pooled_share.allowance(fed, budget) if decoding else budget
            for seq in pooled:
                if allowance <= 0:
                    break
                allowance -= self._schedule_prefill(seq, batch, allowance)
        if self.speculator is not None:
            self.speculator.add_drafts(batch)
        for seq in recalled:
            batch.recall(seq)
        return batch

    def _prefix_ready(self, seq: Sequence, batch: ScheduledBatch) -> bool:
        """Whether seq may prefill now: it waits for no shared prefix, or that prefix is computed (and copied)."""
        source = seq.prefix_source
        if source is None:
            return True
        if source.status is not SeqStatus.RUNNING:  # finished or aborted before computing it: prefill ourselves
            seq.prefix_source = None
            return True
        if source.num_computed < seq.prefix_len:
            return False
        batch.copies.append(PrefixCopy(source.slot, seq.slot, seq.prefix_len))
        self.slots.note_copy(source.slot, seq.slot, seq.prefix_len)
        if source.shifted_at is not None and source.shifted_at < seq.prefix_len:
            seq.shifted_at = source.shifted_at
        self.reused_tokens += seq.prefix_len - seq.num_cached
        seq.num_computed = seq.num_cached = seq.prefix_len
        seq.prefix_source = None
        return True

    def _schedule_prefill(self, seq: Sequence, batch: ScheduledBatch, budget: int) -> int:
        left = len(seq.prompt_ids) - seq.num_computed
        if self.whole_prompts:  # one chunk or none: a prompt too big for what is left of the budget waits its turn
            if left > budget and not batch.empty:
                return 0
            size = left
        else:
            size = min(self.prefill_chunk, budget, left)
        start = seq.num_computed
        last = start + size == len(seq.prompt_ids)
        pooling = seq.params.pooling
        want_logits = last and (pooling is None or bool(pooling.logits_of))
        embed = pooling is not None and not pooling.logits_of
        batch.add(seq, SeqChunk(seq.slot, seq.prompt_ids[start:start + size], start, want_logits=want_logits,
                                hidden=embed))
        return size

    def _admit(self) -> None:
        while self.waiting and self.slots.free:
            seq = self.waiting[0]
            if seq.pooled:  # every position computed here: an empty slot first, cached prefixes kept for chats
                seq.slot, reused = self.slots.best_match(seq.prompt_ids, use_prefix=False)[0], 0
            else:
                seq.slot, reused = self._pick_slot(seq.prompt_ids, exact=seq.params.seed is not None)
            if self.share_prefix and not seq.pooled:
                source, shared = self._pick_source(seq.prompt_ids, exact=seq.params.seed is not None)
                if source is not None and shared >= reused + self.min_shared_tokens:
                    seq.prefix_source, seq.prefix_len = source, shared
                    # the copy overwrites the slot: take the least useful one rather than the best match
                    seq.slot, reused = self._pick_slot(seq.prompt_ids, use_prefix=False)
            if not self._make_room(seq):
                seq.prefix_source, seq.slot = None, -1
                return  # the KV budget is taken by running requests: wait for one to finish
            self.waiting.popleft()
            if reused == len(seq.prompt_ids):  # the slot kept this prompt's last logits row too (_pick_slot)
                seq.prompt_logits, seq.recalled = self.slots.kept_logits(seq.slot, seq.prompt_ids), True
            served, reused = self._reuse_past_prefix(seq, reused)
            self.slots.take(seq.slot)
            seq.num_computed, seq.num_cached = served, reused
            self.reused_tokens += reused
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)

    def _reuse_past_prefix(self, seq: Sequence, reused: int) -> tuple[int, int]:
        """(prompt tokens seq's KV holds before its first chunk, how many of them come from the cache): its shared
        prefix (``reused``) twice, or more when cached runs after it move into place (cache_reuse.py; the fills
        between them are computed, not cached). seq learns where its KV stops being what a cold prefill gives."""
        held, moved = self.slots.held(seq.slot), self.slots.shifted_at(seq.slot)
        seq.shifted_at = moved if moved is not None and moved < reused else None
        if self.cache_reuse is None or seq.prefix_source is not None or reused < shared_prefix(held, seq.prompt_ids):
            return reused, reused  # no runner support, a prefix copy to come, or reuse cut short (_pick_slot)
        shift = self.cache_reuse.plan(seq, held, reused, floor=self.slots.shared_upto(seq.slot))
        if shift is None:
            return reused, reused
        self._shifts.append(shift)
        first, moved_tokens = shift.runs[0].dst, sum(run.length for run in shift.runs)
        seq.shifted_at = first if seq.shifted_at is None else min(seq.shifted_at, first)
        self.shifted_tokens += moved_tokens
        return shift.served, reused + moved_tokens

    def _make_room(self, seq: Sequence) -> bool:
        """With a KV budget: whether seq fits now, after evicting idle slots' caches (least recently used first)."""
        reserved = sum(self._reservation(s) for s in self.running)
        return self.slots.make_room(seq.slot, self._reservation(seq), reserved)

    def _reservation(self, seq: Sequence) -> int:
        if self.kv_budget is None:
            return 0
        answer = 0 if seq.pooled else seq.params.max_new_tokens
        return self.kv_budget.reserve(len(seq.prompt_ids), answer, self.max_model_len)

    def _pick_slot(self, prompt: list[int], *, use_prefix: bool = True, exact: bool = False) -> tuple[int, int]:
        """The free slot to use and how many leading prompt tokens its KV already holds (to skip prefilling);
        ``exact``: only KV a cold prefill would give (a seeded request: no moved cells)."""
        slot, shared = self.slots.best_match(prompt, use_prefix=use_prefix, exact=exact)
        if shared >= len(prompt):  # the slot holds the whole prompt (an exact repeat: a retry, Regenerate, n > 1)
            if self.slots.kept_logits(slot, prompt) is not None:
                return slot, len(prompt)  # and the logits after it: nothing to compute
            return slot, self._cold_chunk_start(len(prompt))
        return slot, shared

    def _cold_chunk_start(self, prompt_len: int) -> int:
        """Where a cold prefill's last chunk starts. An exact repeat without kept logits (its slot's KV came from a
        longer prompt) recomputes that chunk, not just the last token: one token alone runs through other kernels
        (matrix-vector) than a chunk, and its logits came out ~1e-6 apart, enough to flip a seeded sample now and
        then. Recomputed as the cold run did, they are identical."""
        return ((prompt_len - 1) // self.prefill_chunk) * self.prefill_chunk

    def _pick_source(self, prompt: list[int], *, exact: bool = False) -> tuple[Sequence | None, int]:
        """The running sequence sharing the longest prefix with prompt (computed or still to compute), and its length;
        ``exact``: only KV a cold prefill gives (a seeded request: no moved cells).

        Only sequences admitted earlier are candidates, so waits on a source never form a cycle."""
        best: Sequence | None = None
        best_key = (0, 0)
        for seq in self.running:
            shared = shared_prefix(seq.prompt_ids, prompt)
            if shared == len(seq.prompt_ids):
                shared += shared_prefix(seq.output_ids, prompt[shared:])
            shared = min(shared, len(prompt) - 1)  # the last prompt token is always fed again
            if exact and seq.shifted_at is not None:
                shared = min(shared, seq.shifted_at)
            key = (shared, seq.num_computed)  # longest; then the one that has computed the most
            if key > best_key:
                best, best_key = seq, key
        return best, best_key[0]

    def postprocess(self, batch: ScheduledBatch, tokens: list[list[int]],
                    logprobs: list[list[TokenLogprob | None]]) -> list[TokenOutput]:
        """Record the step's results: for each sampled sequence the 1..k+1 tokens it keeps (one without drafts).
        Returns one output per sampled sequence (finished ones already freed)."""
        for seq, chunk in zip(batch.owners, batch.chunks, strict=True):
            seq.num_computed = chunk.start_pos + len(chunk.token_ids)
        outputs = []
        for seq, kept, kept_logprobs in zip(batch.sampled, tokens, logprobs, strict=True):
            if seq.draft:
                # the KV holds the fed token and the accepted drafts; rejected drafts' cells get overwritten
                seq.num_computed -= len(seq.draft) + 1 - len(kept)
                if self.speculator is not None:
                    self.speculator.record(seq, len(seq.draft), len(kept) - 1)
            outputs.append(self._append_all(seq, kept, kept_logprobs))
        self.running = [s for s in self.running if s.status is SeqStatus.RUNNING]
        return outputs

    def finish_pooled(self, seq: Sequence, vector: np.ndarray) -> TokenOutput:
        """A pooled request's last chunk ran: it ends with its vector, its slot emptied (nothing worth reusing)."""
        self._finish(seq, FinishReason.STOP, keep_kv=False)
        self.running = [s for s in self.running if s.status is SeqStatus.RUNNING]
        return TokenOutput(seq.request_id, [], FinishReason.STOP, num_prompt_tokens=len(seq.prompt_ids),
                           embedding=vector)

    def _append_all(self, seq: Sequence, tokens: list[int], logprobs: list[TokenLogprob | None]) -> TokenOutput:
        """Append tokens in order until one finishes the sequence; one output carries them all."""
        out = self._append(seq, tokens[0], logprobs[0])
        for token, logprob in zip(tokens[1:], logprobs[1:], strict=True):
            if out.finish_reason is not None:
                break
            more = self._append(seq, token, logprob)
            out.new_token_ids.extend(more.new_token_ids)
            if more.logprobs:
                out.logprobs = [*(out.logprobs or []), *more.logprobs]
            out.finish_reason, out.error = more.finish_reason, more.error
        return out

    def _append(self, seq: Sequence, token: int, logprob: TokenLogprob | None) -> TokenOutput:
        first = not seq.output_ids
        out = TokenOutput(seq.request_id, [token], num_prompt_tokens=len(seq.prompt_ids) if first else 0,
                          logprobs=[logprob] if logprob is not None else None,
                          num_cached_tokens=seq.num_cached if first else 0)
        if not advance(seq.sampling, token):  # the mask rules this out; if a grammar library disagrees with
            return self._reject(seq, out, token)  # itself, only this request ends
        if grammar_ended(seq.sampling) or (token in seq.stop_ids and not seq.params.ignore_eos):
            out.new_token_ids, out.logprobs = [], None  # a stop token is never shown
            self._finish(seq, FinishReason.STOP)
            out.finish_reason = FinishReason.STOP
            return out
        seq.output_ids.append(token)
        seq.sampling.record(token)
        if len(seq.output_ids) >= seq.params.max_new_tokens or seq.num_tokens >= self.max_model_len:
            self._finish(seq, FinishReason.LENGTH)
            out.finish_reason = FinishReason.LENGTH
        return out

    def _reject(self, seq: Sequence, out: TokenOutput, token: int) -> TokenOutput:
        self._finish(seq, FinishReason.ABORT)
        out.new_token_ids, out.logprobs, out.finish_reason = [], None, FinishReason.ABORT
        out.error = f"constrained decoding: the grammar rejected token {token}"
        return out

    def abort(self, request_ids: Iterable[str]) -> list[TokenOutput]:
        """Finish these requests now; unknown or already finished ids are ignored (aborts are idempotent)."""
        wanted = set(request_ids)
        hit = [s for s in (*self.waiting, *self.running) if s.request_id in wanted]
        for seq in hit:
            self._finish(seq, FinishReason.ABORT)
        self.waiting = deque(s for s in self.waiting if s.status is SeqStatus.WAITING)
        self.running = [s for s in self.running if s.status is SeqStatus.RUNNING]
        return [TokenOutput(s.request_id, [], FinishReason.ABORT) for s in hit]

    def fail_running(self, message: str) -> list[TokenOutput]:
        """A step failed: end every running sequence with the error instead of leaving it hanging."""
        failed = list(self.running)
        for seq in failed:
            self._finish(seq, FinishReason.ABORT, keep_kv=False)  # what the failed step left in the KV is unknown
        self.running = []
        return [TokenOutput(s.request_id, [], FinishReason.ABORT, error=message) for s in failed]

    def fail(self, errors: dict[Sequence, str]) -> list[TokenOutput]:
        """End these sequences with their error, forgetting their KV. None may have had its last output delivered
        (a sequence that ``_append`` finished in a step whose postprocessing then failed gets the error instead)."""
        for seq in errors:
            if seq.status is not SeqStatus.FINISHED:
                self._finish(seq, FinishReason.ABORT, keep_kv=False)
        self.waiting = deque(s for s in self.waiting if s.status is SeqStatus.WAITING)
        self.running = [s for s in self.running if s.status is SeqStatus.RUNNING]
        return [TokenOutput(s.request_id, [], FinishReason.ABORT, error=message) for s, message in errors.items()]

    def _finish(self, seq: Sequence, reason: FinishReason, *, keep_kv: bool = True) -> None:
        if seq.status is SeqStatus.RUNNING:
            held = (seq.prompt_ids + seq.output_ids)[:seq.num_computed] if keep_kv else None
            kept = (len(seq.prompt_ids), seq.prompt_logits) if seq.prompt_logits is not None else None
            self.slots.release(seq.slot, held, kept, seq.shifted_at)
        seq.status = SeqStatus.FINISHED
        seq.slot = -1
