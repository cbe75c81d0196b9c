"""What every protocol's request becomes: OpenAI-style chat messages plus sampling overrides, run on the one
engine through the same path as ``/v1/chat/completions`` (``ChatModel.astream``, the same limits and metrics).

The Responses, Anthropic and Ollama routes only translate their request into a ``ChatJob`` and the resulting
``StreamEvent``s into their own wire format; nothing here knows any of those formats.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError

from qwen_stream.models.tools import ToolRequest
from qwen_stream.server.admission import prepare_off_loop, start_generation, stream_of
from qwen_stream.server.errors import APIError
from qwen_stream.server.generation import Generation

if TYPE_CHECKING:
    from qwen_stream.api import ChatModel, PreparedRequest
    from qwen_stream.server.state import ServerState
    from qwen_stream.types import SamplingParams

BodyT = TypeVar("BodyT", bound=BaseModel)
# Output formats go to astream with the chat options (see ChatJob.chat_overrides), not into SamplingParams first.
_FORMAT_KEYS = ("json_schema", "response_format")


class StrictBody(BaseModel):
    """The base of every protocol's request body: strict about types (``"max_tokens": "5"`` is an error, as
    upstream), silent about fields it does not know (clients send many)."""

    model_config = ConfigDict(strict=True, extra="ignore")


def parse_part(model: type[BodyT], data: object, where: str) -> BodyT:
    """Validate one piece of a body that its protocol types by a field (``{"type": ...}``); errors name ``where``."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise APIError(400, f"{where}{'.' + loc if loc else ''}: {first.get('msg', 'invalid value')}",
                       "invalid_request_error", param=where) from exc


def unsupported(field_name: str, why: str) -> APIError:
    """A field that would change what the request means and that this server does not honour: a 400."""
    return APIError(400, f"{field_name}: {why}", "invalid_request_error", param=field_name)


@dataclass(slots=True)
class ChatJob:
    """One answer, in the engine's terms."""

    messages: list[dict[str, Any]]  # OpenAI chat messages: system/user/assistant (tool_calls)/tool
    sampling: dict[str, Any] = field(default_factory=dict)  # SamplingParams overrides; None keeps the default
    # What ChatModel.astream takes besides sampling: tools (OpenAI function specs), tool_choice,
    # parallel_tool_calls, thinking; None keeps the default.
    options: dict[str, Any] = field(default_factory=dict)
    # Continue this text as is, no chat template (Ollama's raw generate), or these token ids (a FIM prompt).
    raw_prompt: str | list[int] | None = None
    model: str | None = None  # the request's model name (None: the server's default)
    keep_alive_s: float | None = None  # Ollama's keep_alive: how long the model stays loaded after this

    def chat_overrides(self) -> dict[str, Any]:
        """The keyword arguments for astream: chat options and output formats (which the model compiles into a
        grammar, and checks against a forced tool call)."""
        formats = {k: self.sampling.get(k) for k in _FORMAT_KEYS}
        return {k: v for k, v in {**self.options, **formats}.items() if v is not None}


@dataclass(slots=True)
class StartedJob:
    gen: Generation
    model_name: str
    prompt_tokens: int  # known at submission, before the first token (Anthropic's message_start needs it)


async def start_job(state: ServerState, job: ChatJob, route: str) -> StartedJob:
    """Submit ``job``; bad input is a 400, a full queue a 429, a model not loaded yet a 503 (as ``APIError``)."""
    model, _, name = await state.resolve(job.model, job.keep_alive_s)
    state.limits.check_stops(job.sampling.get("stop"))
    raw = job.raw_prompt

    def prepare() -> PreparedRequest:  # templating and tokenizing: CPU work, off the event loop
        if raw is not None:  # no template, no chat options: an output format goes straight into the params
            return model.prepare_completion(raw, params=sampling_params(model, job.sampling))
        params = sampling_params(model, {k: v for k, v in job.sampling.items() if k not in _FORMAT_KEYS})
        return model.prepare_chat(job.messages, params=params, **job.chat_overrides())

    prepared = await prepare_off_loop(prepare)
    starter = stream_of(model, prepared, chat=raw is None)
    gen = await start_generation([(starter, prepared.params, True)], state.metrics_for(name), route)
    return StartedJob(gen, name, gen.choices[0].stream.prompt_info.num_tokens)


def sampling_params(model: ChatModel, overrides: dict[str, Any]) -> SamplingParams:
    try:
        return model.sampling_params(**{k: v for k, v in overrides.items() if v is not None})
    except (ValueError, TypeError) as exc:
        raise APIError(400, str(exc), "invalid_request_error") from exc


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

