"""What every protocol's request becomes, and the one way it reaches the engine.

A ``ChatJob`` is a request in neutral terms: OpenAI-style chat messages, raw prompts or fill-in-the-middle pieces,
``SamplingFields``, chat options, the model it names and how many choices. ``start_job`` is the whole path, the
request only moving down: resolve the model (404, 503 while loading), check the stop strings, let the model's input
processor make the engine requests off the event loop (templates, tokenizing, defaults, seeds, the answer length:
the rest of the window, at most ``--max-tokens-cap``; bad values a 400 naming the field), then submit them through
its engine client (429 when the queue is full, 503 when the engine is down). The protocols' routes only translate
their body into a ``ChatJob`` and the resulting events into their own wire format.

A conversation too long for the window is refused with its size (``context_length_exceeded``), as OpenAI's,
Anthropic's and llama.cpp's servers answer, unless the job's protocol folds it (Ollama; Responses with
``truncation: "auto"``): then its oldest turns are dropped, the prompt's true size is what usage reports, and the
server's log says how many turns went.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qwen_stream.inputs.answer_length import LengthPolicy
from qwen_stream.inputs.fim import FimInput
from qwen_stream.inputs.processor import InputProcessor, Prompt
from qwen_stream.inputs.request import EngineRequest
from qwen_stream.output.token_strings import TokenStrings
from qwen_stream.server.pipeline.admission import prepare_off_loop, start_generation
from qwen_stream.server.pipeline.generation import Generation
from qwen_stream.server.pipeline.sampling_fields import SamplingFields

if TYPE_CHECKING:
    from qwen_stream.client.loaded_model import LoadedModel
    from qwen_stream.server.state import ServerState

log = logging.getLogger("qwen_stream.server")


@dataclass(slots=True)
class ChatJob:
    """One request's answers, in neutral terms: a chat (``messages``), raw ``prompts`` or ``fim`` pieces."""

    messages: list[dict[str, Any]]  # OpenAI chat messages: system/user/assistant (tool_calls)/tool
    sampling: SamplingFields = field(default_factory=SamplingFields)
    # A chat's options besides sampling (inputs/chat_options.py): tools (OpenAI function specs), tool_choice,
    # parallel_tool_calls, thinking, chat_template_kwargs; None keeps the default.
    options: dict[str, Any] = field(default_factory=dict)
    model: str | None = None  # the name the request gave: one this server serves, or a 404
    keep_alive_s: float | None = None  # Ollama's keep_alive: how long the model stays loaded after this
    prompts: Sequence[Prompt] | None = None  # raw prompts (text, ids, or both mixed), continued as they are
    fim: list[FimInput] | None = None  # gaps to fill in the middle, on the model's FIM tokens
    n: int = 1  # choices per conversation (per prompt): choice i samples with seed + i
    fold_history: bool = False  # a conversation too long for the window: drop its oldest turns (else a 400)

    def requests(self, inputs: InputProcessor, policy: LengthPolicy) -> list[EngineRequest]:
        """The engine requests the model's input processor makes of this job (CPU work: off the event loop)."""
        fields = {**self.sampling.overrides(), **self.sampling.formats()}
        if self.fim is not None:
            return inputs.fim(self.fim, n=self.n, policy=policy, **fields)
        if self.prompts is not None:
            return inputs.completion(self.prompts, n=self.n, policy=policy, **fields)
        options = {k: v for k, v in self.options.items() if v is not None}
        return inputs.chat(self.messages, n=self.n, policy=policy, **options, **fields)


@dataclass(slots=True)
class StartedJob:
    gen: Generation
    model_name: str  # the name answers carry: the served name
    strings: TokenStrings  # token texts, for logprobs
    requests: list[EngineRequest]  # what was submitted, one per choice
    model: LoadedModel  # what answers it (held by the request until it ends)

    @property
    def prompt_tokens(self) -> int:
        """The first prompt's tokens, known before any answer (Anthropic's message_start needs them)."""
        return self.requests[0].info.num_tokens


async def start_job(state: ServerState, job: ChatJob, route: str) -> StartedJob:
    """Submit ``job`` (every choice of it); refusals are ``APIError``s, raised before any byte is sent."""
    served = await state.resolve(job.model, job.keep_alive_s)
    state.limits.check_stops(job.sampling.stops)
    policy = LengthPolicy(rest_of_window=True, cap=state.max_tokens_cap, fold_history=job.fold_history)
    requests = await prepare_off_loop(lambda: job.requests(served.model.inputs, policy))
    info = requests[0].info
    if info.dropped_turns:
        log.warning("%s: the %d oldest turns of a conversation were dropped to fit the context window of %d tokens "
                    "(the prompt is %d tokens)", route, info.dropped_turns, served.model.context_length,
                    info.num_tokens)
    gen = start_generation(served.model.client, requests, state.metrics_for(served.name), route)
    return StartedJob(gen, served.name, served.model.strings, requests, served.model)
