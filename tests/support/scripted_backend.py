"""A scripted EngineBackend: answers from a script of token ids, with no model, at the seam every front end uses.

For tests about the server rather than the model (pools, loading, health, queue limits, auth, shapes): it keeps
the seam's contract (qwen_stream/engine/backend.py) with the engines' own admission record (RequestRegistry, so a
full queue or a prompt with no room is refused by the same rules), answers in microseconds, and is deterministic:
an answer depends on its prompt and, when sampled, on its seed. ``step_s`` paces it, one token per running request
per step, so a test can catch a stream mid-answer. Tests about what the engine computes (sampling, grammars,
prefix reuse, aborts inside a step) keep the tiny random torch model. A ``gate`` holds every step while it is
closed (cleared), so a test can fill the slots and the queue, see the refusals, then let the rest finish.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qwen_stream.client.loaded_model import LoadedModel
from qwen_stream.engine.backend import EngineHealth, EngineStats, OutputSink
from qwen_stream.engine.registry import RequestRegistry
from qwen_stream.types import FinishReason, SamplingParams, TokenLogprob, TokenOutput

# The answer's token ids for a prompt and its sampling parameters (cut by max_new_tokens and the window).
Script = Callable[[list[int], SamplingParams], Sequence[int]]

STORY = ("Once upon a time a small robot counted the stars above the quiet harbour, and every night it found one "
         "more. The sailors laughed, the children listened, and the robot kept counting until morning came. ")


def text_script(tokenizer: Any, texts: Sequence[str] = (STORY,)) -> Script:
    """Answers that read as text: one of ``texts`` (by a hash of the prompt, and of the seed when sampled),
    starting at a place that hash picks, repeated as long as asked."""
    pieces = [tokenizer.encode(text, add_special_tokens=False) for text in texts]

    def script(prompt_ids: list[int], params: SamplingParams) -> Sequence[int]:
        key = _digest(prompt_ids, "greedy" if params.greedy else params.seed)
        ids = pieces[key % len(pieces)]
        start = (key // len(pieces)) % len(ids)
        return list(itertools.islice(itertools.cycle(ids), start, start + params.max_new_tokens))

    return script


def _digest(prompt_ids: list[int], seed: int | str | None) -> int:
    """A stable hash of the prompt and seed; a sampled request without a seed gets a fresh one each time."""
    salt = str(seed) if seed is not None else str(time.monotonic_ns())
    return int.from_bytes(hashlib.sha256(f"{prompt_ids}|{salt}".encode()).digest()[:8], "little")


@dataclass(slots=True)
class _Run:
    request_id: str
    prompt_tokens: int
    params: SamplingParams
    sink: OutputSink
    answer: Sequence[int]
    emitted: list[int] = field(default_factory=list)


class ScriptedBackend:
    """An ``EngineBackend`` whose "model" is ``script``: ``max_running`` requests advance one token per step."""

    name = "scripted"

    def __init__(self, script: Script, *, vocab_size: int, eos_token_ids: Sequence[int] = (),
                 max_model_len: int = 512, max_running: int = 4, max_waiting: int = 16, step_s: float = 0.0,
                 gate: threading.Event | None = None) -> None:
        self.requests = RequestRegistry(max_model_len=max_model_len, max_running=max_running,
                                        max_waiting=max_waiting)
        self.max_model_len, self.max_running, self.max_waiting = max_model_len, max_running, max_waiting
        self.vocab_size = vocab_size
        self.script, self.step_s, self.gate = script, step_s, gate
        self.eos_token_ids = tuple(eos_token_ids)
        self._cond = threading.Condition()
        self._runs: list[_Run] = []
        self._aborted: set[str] = set()
        self._stopping = False
        self._steps = self._tokens = 0
        self._thread = threading.Thread(target=self._loop, name="scripted-engine", daemon=True)
        self._thread.start()

    # ---- the seam ------------------------------------------------------------------------------------------------

    def submit(self, prompt_ids: list[int], params: SamplingParams, output: OutputSink,
               request_id: str | None = None) -> str:
        if params.constraint is not None:  # said, not ignored: grammars are the tiny model's tests
            raise ValueError("the scripted backend does not follow grammars (constrained decoding is tested on "
                             "the tiny model)")
        request_id = self.requests.admit(prompt_ids, request_id)
        run = _Run(request_id, len(prompt_ids), params, output, self.script(list(prompt_ids), params))
        with self._cond:
            self._runs.append(run)
            self._cond.notify()
        return request_id

    def abort(self, request_id: str) -> None:
        with self._cond:
            self._aborted.add(request_id)
            self._cond.notify()

    def abort_all(self) -> int:
        with self._cond:
            ids = [run.request_id for run in self._runs]
            self._aborted.update(ids)
            self._cond.notify()
        return len(ids)

    def reset_prefix_cache(self) -> None:
        pass  # nothing is cached

    def stats(self) -> EngineStats:
        with self._cond:
            running = min(len(self._runs), self.max_running)
            waiting = len(self._runs) - running
        return EngineStats(running=running, waiting=waiting, free_slots=self.max_running - running,
                           steps=self._steps, generated_tokens=self._tokens, forward_s=0.0, sample_s=0.0,
                           step_s=0.0)

    @property
    def num_unfinished(self) -> int:
        return len(self.requests)

    def is_alive(self) -> bool:
        return not self.requests.closed and self._thread.is_alive()

    def health(self) -> EngineHealth:
        if self.requests.closed:
            return EngineHealth("stopped", 0.0, "the engine is shut down")
        if not self._thread.is_alive():
            return EngineHealth("dead", 0.0, "the scripted engine thread ended")
        return EngineHealth("ok", 0.0)

    def shutdown(self, timeout: float = 10.0) -> None:
        if not self.requests.close("the engine is shut down"):
            return
        self.abort_all()
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout)

    # ---- the step loop -------------------------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._runs and not self._stopping:
                    self._cond.wait()
                if not self._runs:
                    return
            while self.gate is not None and not self.gate.wait(0.02) and not self._stopping:
                pass  # held: requests stay running or waiting until the test opens the gate
            with self._cond:
                batch, aborted = self._runs[:self.max_running], self._aborted
                waiting_aborted = [run for run in self._runs[self.max_running:] if run.request_id in aborted]
                self._aborted = set()
            done = [run for run in [*batch, *waiting_aborted] if self._step(run, run.request_id in aborted)]
            with self._cond:
                self._runs = [run for run in self._runs if run not in done]
                self._steps += 1
            if self.step_s:
                time.sleep(self.step_s)

    def _step(self, run: _Run, aborted: bool) -> bool:
        """Hand ``run`` its next output; True once it is finished."""
        out = TokenOutput(run.request_id, [], num_prompt_tokens=run.prompt_tokens)
        if aborted:
            out.finish_reason = FinishReason.ABORT
        else:
            self._next_token(run, out)
        try:
            run.sink(out)
        except Exception:  # the seam's rule: a sink that raises aborts its request (nobody reads it any more)
            out.finish_reason = FinishReason.ABORT
        if out.finish_reason is not None:
            self.requests.finish(run.request_id)
            return True
        return False

    def _next_token(self, run: _Run, out: TokenOutput) -> None:
        params, position = run.params, len(run.emitted)
        if position >= len(run.answer):
            out.finish_reason = FinishReason.STOP if len(run.answer) < params.max_new_tokens else FinishReason.LENGTH
            return
        token = int(run.answer[position])
        stops = set(params.stop_token_ids) | (set() if params.ignore_eos else set(self.eos_token_ids))
        if token in stops:
            out.finish_reason = FinishReason.STOP
            return
        run.emitted.append(token)
        self._tokens += 1
        out.new_token_ids = [token]
        if params.logprobs is not None:
            out.logprobs = [_logprob(token, params.logprobs, self.vocab_size)]
        if len(run.emitted) >= params.max_new_tokens or run.prompt_tokens + len(run.emitted) >= self.max_model_len:
            out.finish_reason = FinishReason.LENGTH


def _logprob(token: int, alternatives: int, vocab_size: int) -> TokenLogprob:
    """The chosen token the likeliest, then ``alternatives`` others, each less likely than the one before."""
    top = [(token, -0.1)] + [((token + 1 + i) % vocab_size, -1.0 - i) for i in range(alternatives - 1)]
    return TokenLogprob(token, -0.1, top[:alternatives] if alternatives else [])


def scripted_model(tokenizer: Any, *, name: str = "scripted", script: Script | None = None,
                   default_params: SamplingParams | None = None, **backend: Any) -> LoadedModel:
    """A LoadedModel over a ScriptedBackend with the real ``tokenizer`` (its chat template, stop ids, vocabulary)."""
    from qwen_stream.models.sources import chat_stop_token_ids

    eos = tuple(chat_stop_token_ids(tokenizer))
    engine = ScriptedBackend(script or text_script(tokenizer), vocab_size=len(tokenizer), eos_token_ids=eos,
                             **backend)
    return LoadedModel.assemble(name=name, tokenizer=tokenizer, engine=engine,
                                default_params=default_params or SamplingParams(max_new_tokens=64),
                                eos_token_ids=eos)
