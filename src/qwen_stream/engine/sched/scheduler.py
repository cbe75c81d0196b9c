"""Which sequences run this step: admission into KV slots, prefill chunks, batched decode, finishing.

The scheduler's contract is two calls, as in nano-vllm: ``schedule()`` says what to feed the runner, and
``postprocess()`` takes the sampled tokens back, decides who finished and frees their slots. Token ids only.

Prefix reuse (``reuse_prefix``, for runners that can rewind a slot): a finished sequence's slot keeps its KV, and
the scheduler remembers which tokens it holds. A new request goes to the free slot sharing the longest prefix with
its prompt and prefills only the rest, so turn N of a conversation does not recompute turns 1..N-1 (llama.cpp's
server does the same per slot). With no shared prefix it takes an empty slot, else the least recently used one.
The slot also keeps the logits row after its last prompt, so an exact repeat of that prompt (a retry, Regenerate)
computes nothing: its first token is sampled from that row (``recalled``), bit for bit as the first time.

Same seed, same text, whatever the cache holds: prefill chunks are cut at fixed positions (chunk_grid.py), and a
request with a seed of its own (``Sequence.exact``) reuses only the KV a cold prefill would have computed bit for bit
(whole grid chunks computed on exact positions: ``exact_upto``), never a chunk cut short by the step's budget. It
pays for that by recomputing what the cache holds otherwise: the earlier answer of a conversation (decoded one token
at a time) and the partial chunk before it, and by decoding without speculation (a draft count follows measured
timings). Requests whose seed was drawn reuse everything and draft, as before. Exact means one request at a time: a
runner's numbers also depend on what else shares the step's batch.

Prefix sharing across slots (``share_prefix``, for runners that can also copy a slot's prefix): when a running
sequence holds (or is about to compute) a longer prefix of the new prompt than any free slot, e.g. the same system
prompt from another user, the new sequence waits until that prefix is computed, gets a copy of it, and prefills
only the rest. Sixteen requests with one system prompt then compute it once, not sixteen times.

Prompts saved on disk (``prompt_cache``, engine/prompt_cache): when a saved prompt shares a longer prefix with the
new one than any free slot (by enough to pay for reading it: index.worth_loading), the sequence takes the least
useful slot and the step loads that entry into it before the forward (``ScheduledBatch.loads``), trimmed to the
shared prefix; a saved prompt that is the whole new one, with its logits row, is recalled as an exact repeat is. The
scheduler sees the index only; a load the step cannot make (a damaged file) sends the sequence back to a cold
prefill (``load_failed``).

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
to the runner before the forward). Never for a request with a seed of its own; moved cells are never exact, so
``exact_upto`` stops before them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING

from qwen_stream.engine.prompt_cache.index import PromptLookup, load_plan
from qwen_stream.engine.request import PrefixCopy, PromptLoad, ScheduledBatch, SeqStatus, Sequence
from qwen_stream.engine.runners.base import KVShift, SeqChunk
from qwen_stream.engine.sample.grammar_masks import advance, grammar_ended
from qwen_stream.engine.sched.cache_reuse import CacheReuse
from qwen_stream.engine.sched.chunk_grid import ChunkGrid
from qwen_stream.engine.sched.kv_budget import KVBudget
from qwen_stream.engine.sched.pooled_share import PooledShare
from qwen_stream.engine.sched.prefill_path import PrefillPaths
from qwen_stream.engine.sched.prefix_source import pick_source
from qwen_stream.engine.sched.slot_pool import KeptRow, SlotPool, shared_prefix
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
                 whole_prompts: bool = False, prompt_cache: PromptLookup | None = None,
                 cache_reuse: CacheReuse | None = None, prefill_paths: PrefillPaths | None = None) -> None:
        self.max_slots = max_slots
        self.whole_prompts = whole_prompts  # the runner needs each prompt in one chunk (an encoder)
        self.max_model_len = max_model_len
        self.prefill_chunk = prefill_chunk
        self.grid = ChunkGrid(prefill_chunk)  # where every prefill chunk is cut (chunk_grid.py)
        self.max_batched_tokens = max(max_batched_tokens, prefill_chunk)
        self.reuse_prefix = reuse_prefix
        self.share_prefix = share_prefix and reuse_prefix
        # A copy moves a whole slot's KV on some runners (llama.cpp): worth it only for a prefix this long.
        self.min_shared_tokens = max(1, min_shared_tokens)
        self.waiting: deque[Sequence] = deque()
        self.running: list[Sequence] = []
        self.slots = SlotPool(max_slots, reuse_prefix=reuse_prefix, kv_budget=kv_budget, grid=self.grid)
        self.reused_tokens = 0  # prompt tokens served from a slot's KV instead of prefilled, in total
        self.speculate = speculate  # only for runners that rewind a slot: that is how rejected drafts are undone
        self.speculator = Speculator(speculate, max_model_len, drafter) if speculate else None
        self.kv_budget = kv_budget  # None: every slot owns a full window of KV (kv_budget.py)
        self.pooled_share = PooledShare(self.max_batched_tokens)  # pooled prompts beside streams (pooled_share.py)
        self.prompt_cache = prompt_cache if reuse_prefix else None  # saved prompts on disk (their index only)
        self._loads: list[PromptLoad] = []  # planned at admission, handed to the next batch
        self.cache_reuse = cache_reuse if reuse_prefix else None  # None: the runner cannot move KV (cache_reuse.py)
        self.shifted_tokens = 0  # of reused_tokens, those moved into place past the prefix (cache reuse)
        self._shifts: list[KVShift] = []  # planned at admission, handed to the next batch
        self.prefill_paths = prefill_paths  # None: the runner has no fast prefill (prefill_path.py)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        # A seed of its own: no drafts either. How many a step checks depends on measured timings and on earlier
        # requests, and a chunk of [token, drafts...] computes other low bits than one token: the text would too.
        if self.speculator is not None and not seq.pooled and not seq.exact:
            self.speculator.start(seq)
        self.waiting.append(seq)

    def schedule(self) -> ScheduledBatch:
        self._admit()
        batch = ScheduledBatch()
        if self.prefill_paths is not None:
            self.prefill_paths.new_step()  # every fast-eligible chunk of a step goes one way: measurable
        batch.loads, self._loads = self._loads, []
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
        if source.num_computed < seq.prefix_len or any(load.seq is source for load in batch.loads):
            return False  # not computed yet, or loaded from disk this very step (copied once the load holds)
        seq.prefix_source = None
        exact_upto = self.grid.floor(min(source.exact_upto, seq.prefix_len))
        # a seed of its own copies only what the source computed as a cold run does (whole chunks from 0)
        length = exact_upto if seq.exact else seq.prefix_len
        if length < self.min_shared_tokens:
            return True  # too little worth a copy: prefill it all
        batch.copies.append(PrefixCopy(source.slot, seq.slot, length))
        self.slots.note_copy(source.slot, seq.slot, length)
        self.reused_tokens += length - seq.num_cached
        seq.num_computed = seq.num_cached = length
        seq.exact_upto = exact_upto
        return True

    def _schedule_prefill(self, seq: Sequence, batch: ScheduledBatch, budget: int) -> int:
        left = len(seq.prompt_ids) - seq.num_computed
        if self.whole_prompts:  # one chunk or none: a prompt too big for what is left of the budget waits its turn
            if left > budget and not batch.empty:
                return 0
            size = left
        else:
            # pooled prompts are never reused (their slot is emptied after): any cut serves them
            piece = min(self.prefill_chunk, left) if seq.pooled else self.grid.piece(seq.num_computed, len(seq.prompt_ids))
            if seq.exact and piece > budget:  # a chunk cut short computes other numbers: wait for a step with room,
                if any(owner.in_prefill for owner in batch.owners):  # or take it whole beside decodes only
                    return 0
                budget = piece
            size = min(piece, budget)
        start = seq.num_computed
        last = start + size == len(seq.prompt_ids)
        paths = self.prefill_paths
        fast = paths is not None and not seq.pooled and not seq.exact and paths.choose(size)
        if last and not seq.pooled:  # its row is a cold run's if everything before the last chunk was
            seq.prompt_row_exact = start == seq.exact_upto and not fast
        pooling = seq.params.pooling
        want_logits = last and (pooling is None or bool(pooling.logits_of))
        embed = pooling is not None and not pooling.logits_of
        batch.add(seq, SeqChunk(seq.slot, seq.prompt_ids[start:start + size], start, want_logits=want_logits,
                                hidden=embed, fast=fast))
        return size

    def _admit(self) -> None:
        while self.waiting and self.slots.free:
            seq = self.waiting[0]
            # pooled: every position computed here, so an empty slot first (cached prefixes kept for chats)
            seq.slot, reused = self.slots.best_match(seq.prompt_ids, use_prefix=not seq.pooled, exact=seq.exact)
            load = self._plan_load(seq, reused) if not seq.pooled else None  # seq.slot: where it loads
            if self.share_prefix and not seq.pooled:
                source, shared = pick_source(self.running, seq.prompt_ids)
                shared = self.grid.floor(shared) if seq.exact else shared
                # a copy beats a load of as much (a memcpy, no file to read and check)
                if (source is not None and shared >= reused + self.min_shared_tokens
                        and (load is None or shared >= load.keep)):
                    seq.prefix_source, seq.prefix_len, load = source, shared, None
                    # the copy overwrites the slot: take the least useful one rather than the best match
                    seq.slot, reused = self.slots.best_match(seq.prompt_ids, use_prefix=False)
            if load is not None:
                reused = load.keep
            if not self._make_room(seq):
                seq.prefix_source, seq.slot = None, -1
                return  # the KV budget is taken by running requests: wait for one to finish
            self.waiting.popleft()
            held = self.slots.held(seq.slot)  # what its KV still holds, before the slot is taken
            self._take_slot(seq, reused, load)
            if load is not None:  # once the slot is seq's (a failure before leaves no load for a free slot)
                self._loads.append(load)  # recalled if it holds the whole prompt: the step fills the row
            if load is None:  # (a seed of its own never gets moved KV: cache_reuse.py says no)
                self._reuse_past_prefix(seq, held)
            self.reused_tokens += seq.num_cached
            seq.status = SeqStatus.RUNNING
            self.running.append(seq)

    def _take_slot(self, seq: Sequence, reused: int, load: PromptLoad | None = None) -> None:
        """seq owns its slot, reusing the first ``reused`` prompt tokens of its KV (all of them: an exact repeat,
        whose first token comes from the row the slot kept), or of the saved prompt the step ``load``s."""
        if load is not None:  # the file replaces what the slot held; its row, for a whole prompt, comes with it
            seq.recalled, seq.exact_upto = reused == len(seq.prompt_ids), load.exact_upto
            seq.prompt_row_exact = seq.recalled and load.row_exact
        else:
            kept = self.slots.kept_row(seq.slot, seq.prompt_ids, exact=seq.exact) if reused == len(seq.prompt_ids) \
                else None
            if kept is not None:
                seq.prompt_logits, seq.prompt_row_exact, seq.recalled = kept.row, kept.exact, True
            seq.exact_upto = self.slots.exact_part(seq.slot, reused)
        self.slots.take(seq.slot)
        seq.num_computed = seq.num_cached = reused

    def _reuse_past_prefix(self, seq: Sequence, held: list[int]) -> None:
        """Cache reuse: cached runs past seq's shared prefix with ``held`` (what its slot's KV holds) move into place
        (cache_reuse.py; the fills between them are computed, not cached), so more of its prompt is in its KV before
        its first chunk."""
        reused = seq.num_computed
        if self.cache_reuse is None or seq.prefix_source is not None or reused < shared_prefix(held, seq.prompt_ids):
            return  # no runner support, a prefix copy to come, or an exact repeat's last token fed again
        shift = self.cache_reuse.plan(seq, held, reused, floor=self.slots.shared_upto(seq.slot))
        if shift is None:
            return
        self._shifts.append(shift)
        moved = sum(run.length for run in shift.runs)
        self.shifted_tokens += moved
        seq.num_computed, seq.num_cached = shift.served, reused + moved

    def _plan_load(self, seq: Sequence, reused: int) -> PromptLoad | None:
        """A load of the saved prompt sharing the longest prefix with seq's, if it spares enough prefill beyond the
        ``reused`` tokens of the best free slot; seq.slot is then the least useful slot (the load overwrites it)."""
        match = self.prompt_cache.best(seq.prompt_ids) if self.prompt_cache is not None else None
        if match is None:
            return None
        plan = load_plan(match, len(seq.prompt_ids), reused, exact=seq.exact, grid=self.grid)
        if plan is None:
            return None
        seq.slot = self.slots.best_match(seq.prompt_ids, use_prefix=False)[0]
        keep, exact_upto = plan
        return PromptLoad(seq, match.name, match.length, keep, exact_upto, match.row_exact)

    def load_failed(self, seq: Sequence, batch: ScheduledBatch) -> None:
        """The step could not load seq's saved prefix (a damaged file, no free KV cells): its slot is empty, so seq
        prefills from the start, and what this step scheduled for it is taken back."""
        batch.drop(seq)
        self.reused_tokens -= seq.num_cached
        seq.num_computed = seq.num_cached = seq.exact_upto = 0  # nothing of the file reached the slot
        seq.recalled, seq.prompt_logits, seq.prompt_row_exact = False, None, False

    def _make_room(self, seq: Sequence) -> bool:
        """With a KV budget: whether seq fits now, after evicting idle slots' caches (least recently used first)."""
        reserved = sum(self._reservation(s) for s in self.running)
        return self.slots.make_room(seq.slot, self._reservation(seq), reserved)

    def _reservation(self, seq: Sequence) -> int:
        if self.kv_budget is None:
            return 0
        answer = 0 if seq.pooled else seq.params.max_new_tokens
        return self.kv_budget.reserve(len(seq.prompt_ids), answer, self.max_model_len)

    def postprocess(self, batch: ScheduledBatch, tokens: list[list[int]],
                    logprobs: list[list[TokenLogprob | None]]) -> list[TokenOutput]:
        """Record the step's results: for each sampled sequence the 1..k+1 tokens it keeps (one without drafts).
        Returns one output per sampled sequence (finished ones already freed)."""
        for seq, chunk in zip(batch.owners, batch.chunks, strict=True):
            seq.num_computed = chunk.start_pos + len(chunk.token_ids)
            if chunk.start_pos == seq.exact_upto and seq.num_computed <= len(seq.prompt_ids) and not chunk.fast \
                    and self.grid.is_whole(chunk.start_pos, len(chunk.token_ids)):
                seq.exact_upto = seq.num_computed  # a whole prompt chunk on exact positions: exact too
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
            kept = None if seq.prompt_logits is None else KeptRow(len(seq.prompt_ids), seq.prompt_logits,
                                                                     seq.prompt_row_exact)
            self.slots.release(seq.slot, held, kept, seq.exact_upto)
        seq.status = SeqStatus.FINISHED
        seq.slot = -1
