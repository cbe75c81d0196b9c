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

from qwen_stream.server.admission import prepare_off_loop, start_generation, stream_of
from qwen_stream.server.errors import APIError
from qwen_stream.server.generation import Generation

if TYPE_CHECKING:
    from qwen_stream.api import ChatModel, PreparedRequest
    from qwen_stream.server.app import ServerState
    from qwen_stream.types import SamplingParams

BodyT = TypeVar("BodyT", bound=BaseModel)


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

    messages: list[dict[str, Any]]  # OpenAI chat messages: system/user/assistant/tool
    sampling: dict[str, Any] = field(default_factory=dict)  # SamplingParams overrides; None keeps the default
    raw_prompt: str | None = None  # continue this text as is, no chat template (Ollama's raw generate)


@dataclass(slots=True)
class StartedJob:
    gen: Generation
    model_name: str
    prompt_tokens: int  # known at submission, before the first token (Anthropic's message_start needs it)


async def start_job(state: ServerState, job: ChatJob, route: str) -> StartedJob:
    """Submit ``job``; bad input is a 400, a full queue a 429, a model not loaded yet a 503 (as ``APIError``)."""
    model, _, name = state.require_model()
    state.limits.check_stops(job.sampling.get("stop"))
    raw = job.raw_prompt

    def prepare() -> PreparedRequest:  # templating and tokenizing: CPU work, off the event loop
        params = sampling_params(model, job.sampling)
        if raw is not None:
            return model.prepare_completion(raw, params=params)
        return model.prepare_chat(job.messages, params=params)

    prepared = await prepare_off_loop(prepare)
    starter = stream_of(model, prepared, chat=raw is None)
    gen = await start_generation([(starter, prepared.params, True)], state.metrics, route)
    return StartedJob(gen, name, gen.choices[0].stream.prompt_info.num_tokens)


def sampling_params(model: ChatModel, overrides: dict[str, Any]) -> SamplingParams:
    try:
        return model.sampling_params(**{k: v for k, v in overrides.items() if v is not None})
    except (ValueError, TypeError) as exc:
        raise APIError(400, str(exc), "invalid_request_error") from exc


def count_prompt_tokens(state: ServerState, messages: list[dict[str, Any]]) -> int:
    """Tokens of the prompt these messages make with the chat template, whole (no turn folded away)."""
    model, _, _ = state.require_model()
    try:
        return model.prompter.build(messages, max_prompt_tokens=sys.maxsize).num_tokens
    except (ValueError, TypeError) as exc:
        raise APIError(400, str(exc), "invalid_request_error") from exc

