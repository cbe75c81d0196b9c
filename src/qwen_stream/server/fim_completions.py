"""``POST /v1/completions`` with ``suffix`` (Tabby, Continue's OpenAI provider): each prompt is the text before the
cursor, ``suffix`` the text after it, and the choices are the middle, written on the model's FIM tokens.

Everything else is the plain completions route's: ``n``, ``stream``, ``logprobs``, ``stop``, the sampling fields.
``echo`` with ``suffix`` is a 400, as OpenAI answers. Without ``max_tokens`` the middle may take the model's
default answer length (capped by ``--max-tokens-cap``), not the rest of the window, which the file fills.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import Request
from fastapi.responses import Response

from qwen_stream.models.fim import FimBudget, FimPrompter
from qwen_stream.server.admission import prepare_off_loop, respond_json, start_generation, stream_of
from qwen_stream.server.chat_job import unsupported
from qwen_stream.server.completions import CompletionReply, collect_completion, stream_completion
from qwen_stream.server.fim_prompts import prompter_for
from qwen_stream.server.generation import build_params
from qwen_stream.server.limits import check_encodable
from qwen_stream.server.protocol import CompletionRequest
from qwen_stream.server.sse import SSEResponse
from qwen_stream.types import SamplingParams

if TYPE_CHECKING:
    from qwen_stream.api import ChatModel, PreparedRequest
    from qwen_stream.server.state import ServerState

ROUTE = "/v1/completions"


async def fim_completions(state: ServerState, request: Request, body: CompletionRequest) -> Response:
    model, strings, name = await state.resolve(body.model)
    if body.echo:
        raise unsupported("echo", "echo is not supported with suffix")
    state.limits.check_stops(body.stop)
    suffix = body.suffix or ""
    check_encodable([*((f"prompt.{i}", p) for i, p in enumerate(body.prompts)), ("suffix", suffix)])

    def prepare() -> list[tuple[PreparedRequest, bool]]:
        params = _params(model, body, state)
        prompter = prompter_for(model)
        budget = FimBudget(total=model.context_length - params[0].max_new_tokens)
        return [(_prepared(model, prompter, prompt, suffix, budget, p), j == 0)
                for prompt in body.prompts for j, p in enumerate(params)]

    prepared = await prepare_off_loop(prepare)
    starters = [(stream_of(model, p, chat=False), p.params, first) for p, first in prepared]
    gen = await start_generation(starters, state.metrics_for(name), ROUTE)
    reply = CompletionReply(model=name, include_usage=body.include_usage, want_logprobs=body.logprobs is not None)
    if body.stream:
        return SSEResponse(stream_completion(gen, reply, strings))
    return await respond_json(request, collect_completion(gen, reply, strings))


def _params(model: ChatModel, body: CompletionRequest, state: ServerState) -> list[SamplingParams]:
    params = build_params(model, body)
    if body.token_limit is None and state.max_tokens_cap is not None:
        params = [p.with_(max_new_tokens=min(p.max_new_tokens, state.max_tokens_cap)) for p in params]
    return params


def _prepared(model: ChatModel, prompter: FimPrompter, prompt: str, suffix: str, budget: FimBudget,
              params: SamplingParams) -> PreparedRequest:
    ids = prompter.file_level(prompt, suffix, budget).ids
    stops = tuple(dict.fromkeys([*params.stop_token_ids, *prompter.tokens.stop_ids]))
    return model.prepare_completion(ids, params=params.with_(stop_token_ids=stops))

