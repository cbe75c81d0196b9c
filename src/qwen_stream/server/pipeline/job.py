"""What every protocol's request becomes, and the one way it reaches the engine.

A ``ChatJob`` is a request in the engine's terms: OpenAI-style chat messages (or raw prompts), ``SamplingFields``,
chat options, the model it names and how many choices. ``start_job`` applies every rule once, for every protocol:
the model's name (404), stop string limits, the answer length (no max_tokens: the rest of the window, at most
``--max-tokens-cap``), templating and tokenizing off the event loop (bad values a 400 naming the field), then
submission (429 when the queue is full, 503 when the engine is down). The OpenAI, Responses, Anthropic and Ollama
routes only translate their body into a ``ChatJob`` and the resulting events into their own wire format.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qwen_stream.inputs.tools import ToolRequest
from qwen_stream.server.pipeline.admission import Starter, prepare_off_loop, start_generation, stream_of
from qwen_stream.server.pipeline.generation import Generation, TokenStrings
from qwen_stream.server.pipeline.sampling_fields import SamplingFields
from qwen_stream.server.wire.errors import APIError
from qwen_stream.types import wrap_seed

if TYPE_CHECKING:
    from qwen_stream.api import ChatModel, PreparedRequest
    from qwen_stream.server.state import ServerState
    from qwen_stream.types import SamplingParams



@dataclass(slots=True)
class ChatJob:
    """One request's answers, in the engine's terms."""

    messages: list[dict[str, Any]]  # OpenAI chat messages: system/user/assistant (tool_calls)/tool
    sampling: SamplingFields = field(default_factory=SamplingFields)
    # What ChatModel.astream takes besides sampling: tools (OpenAI function specs), tool_choice,
    # parallel_tool_calls, thinking, chat_template_kwargs; None keeps the default.
    options: dict[str, Any] = field(default_factory=dict)
    model: str | None = None  # the name the request gave: one this server serves, or a 404
    keep_alive_s: float | None = None  # Ollama's keep_alive: how long the model stays loaded after this
    # Raw prompts, each continued as is (no chat template, no chat options): text, or token ids (a FIM prompt).
    prompts: list[str] | list[list[int]] | None = None
    n: int = 1  # choices per conversation (per prompt): choice i samples with seed + i

    def chat_overrides(self) -> dict[str, Any]:
        """The keyword arguments for prepare_chat: chat options and output formats (which the model compiles into a
        grammar, and checks against a forced tool call)."""
        return {k: v for k, v in {**self.options, **self.sampling.formats()}.items() if v is not None}


@dataclass(slots=True)
class StartedJob:
    gen: Generation
    model_name: str  # the name answers carry: the served name
    strings: TokenStrings  # token texts, for logprobs
    prompt_tokens: int  # known at submission, before the first token (Anthropic's message_start needs it)


async def start_job(state: ServerState, job: ChatJob, route: str) -> StartedJob:
    """Submit ``job`` (every choice of it); refusals are ``APIError``s, raised before any byte is sent."""
    model, strings, name = await state.resolve(job.model, job.keep_alive_s)
    state.limits.check_stops(job.sampling.stops)
    cap = state.max_tokens_cap or model.context_length
    prepared = await prepare_off_loop(lambda: _prepare(model, job, cap))
    gen = await start_generation(prepared, state.metrics_for(name), route)
    return StartedJob(gen, name, strings, gen.choices[0].stream.prompt_info.num_tokens)


def _prepare(model: ChatModel, job: ChatJob, cap: int) -> list[Starter]:
    """Templating and tokenizing, every choice: CPU work, run in a worker thread. With n > 1 (or several prompts)
    the prompt is counted once per conversation in usage, as OpenAI does."""
    open_ended = job.sampling.max_tokens is None
    if job.prompts is None:
        params = choice_params(model, job, cap, with_formats=False)
        chats = [model.prepare_chat(job.messages, params=p, open_ended=open_ended, **job.chat_overrides())
                 for p in params]
        return [_starter(model, p, i == 0, chat=True) for i, p in enumerate(chats)]
    params = choice_params(model, job, cap, with_formats=True)  # no template: the format goes into the params
    return [_starter(model, model.prepare_completion(prompt, params=p, open_ended=open_ended), j == 0, chat=False)
            for prompt in job.prompts for j, p in enumerate(params)]


def _starter(model: ChatModel, prepared: PreparedRequest, counts_prompt: bool, *, chat: bool) -> Starter:
    return stream_of(model, prepared, chat=chat), prepared.params, counts_prompt


def choice_params(model: ChatModel, job: ChatJob, cap: int, *, with_formats: bool) -> list[SamplingParams]:
    """One SamplingParams per choice: the model's defaults, the job's fields, seed + i for choice i; without
    max_tokens the answer may run to ``cap`` (prepare_* then bound it by the room the prompt leaves)."""
    overrides = job.sampling.overrides()
    if with_formats:
        overrides.update(job.sampling.formats())
    if job.sampling.max_tokens is None:
        overrides["max_new_tokens"] = cap
    base = model.sampling_params(**overrides)
    if base.seed is None:
        return [base] * job.n
    # Distinct seeds, or the n choices of a sampled request would all be the same text.
    return [base.with_(seed=wrap_seed(base.seed + i)) for i in range(job.n)]


def count_prompt_tokens(model: ChatModel, job: ChatJob) -> int:
    """Tokens of the prompt the job makes with the chat template (tools included), whole (no turn folded away)."""
    try:
        tools = ToolRequest.create(job.options.get("tools"), job.options.get("tool_choice"))
        thinking = job.options.get("thinking")
        prompt = model.prompter.build(job.messages, max_prompt_tokens=sys.maxsize,
                                      tools=tools.tools if tools.active else None,
                                      template_kwargs=None if thinking is None else {"enable_thinking": thinking})
    except (ValueError, TypeError) as exc:
        raise APIError(400, str(exc), "invalid_request_error") from exc
    return prompt.num_tokens
