"""Prompts between the runner's slots and the store: saved loads applied before a step's forward, and prompts
saved right after the chunk that completes them.

The step calls ``apply_loads`` before its copies and forward: each planned load (``ScheduledBatch.loads``) is read
and verified from disk and handed to the runner, and a recalled sequence gets the saved logits row. A load that
fails (a damaged or vanished file, a state llama.cpp refuses, no free KV cells) fails no request: the sequence is
returned to the caller, which sends it back to a cold prefill (Scheduler.load_failed). After the forward,
``save_prompts`` copies out the KV of each slot whose prompt's last chunk just ran (the slot then holds exactly the
prompt) and queues it with the logits row for the store's writer: one memory copy in the step, the disk elsewhere.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from qwen_stream.engine.prompt_cache.files import DamagedEntryError
from qwen_stream.engine.prompt_cache.store import PromptStore, check_saving_runner
from qwen_stream.engine.request import PromptLoad, ScheduledBatch, Sequence

logger = logging.getLogger(__name__)


class PromptTransfer:
    def __init__(self, runner: Any, store: PromptStore) -> None:
        check_saving_runner(runner)
        self.runner = runner
        self.store = store
        self.loaded_tokens = 0  # prompt tokens served from disk instead of prefilled, in total

    def apply_loads(self, batch: ScheduledBatch) -> list[Sequence]:
        """Fill the slots of ``batch.loads``; returns the sequences whose load failed (their slots are empty)."""
        failed = []
        for load in batch.loads:
            try:
                self._load(load)
            except (DamagedEntryError, FileNotFoundError):
                failed.append(load.seq)  # the store said why, and forgot the entry
            except Exception as exc:
                logger.warning("prompt cache: loading a saved prompt for request %s failed (%s); prefilling it",
                               load.seq.request_id, exc)
                self.store.forget(load.entry)
                failed.append(load.seq)
        return failed

    def _load(self, load: PromptLoad) -> None:
        seq = load.seq
        saved = self.store.read(load.entry)
        if len(saved.tokens) != load.length or saved.tokens[:load.keep].tolist() != seq.prompt_ids[:load.keep]:
            raise ValueError(f"the saved prompt {load.entry} is not the one the index listed")
        if seq.recalled and saved.logits is None:
            raise ValueError(f"the saved prompt {load.entry} has no logits row to recall")
        self.runner.load_state(seq.slot, saved.state, load.length, keep=load.keep)
        if seq.recalled:
            seq.prompt_logits = torch.from_numpy(saved.logits)
        self.store.touch(load.entry)
        self.loaded_tokens += load.keep

    def save_prompts(self, completed: list[Sequence]) -> None:
        """Queue the state of every prompt whose last chunk ran this step (``completed``, each holding its logits
        row), if the store wants it. Never raises: a save that fails costs a later prefill, not this step."""
        for seq in completed:
            if not self.store.wants(seq.prompt_ids):
                continue
            try:
                state = self.runner.save_state(seq.slot)
                row = seq.prompt_logits.detach().to("cpu", torch.float32).numpy()
                self.store.save(seq.prompt_ids, row, state, seq.exact_upto, seq.prompt_row_exact)
            except Exception:
                logger.exception("prompt cache: saving the prompt of request %s failed", seq.request_id)
