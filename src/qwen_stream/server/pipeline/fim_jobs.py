"""Fill-in-the-middle requests of every protocol (``/infill``, Ollama's and OpenAI's ``suffix``) as engine jobs: the
prompt built from the model's FIM tokens (inputs/fim.py), and those tokens added to the ids that end the answer.

A model without FIM tokens answers 400 saying so. Building the prompt tokenizes whole files: it runs off the event
loop, as every other prompt does.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING

from qwen_stream.inputs.fim import FimBudget, FimPrompt, FimPrompter, NoFimError, fim_tokens
from qwen_stream.server.pipeline.admission import prepare_off_loop
from qwen_stream.server.pipeline.job import ChatJob
from qwen_stream.server.pipeline.sampling_fields import SamplingFields
from qwen_stream.server.wire.errors import APIError

if TYPE_CHECKING:
    from qwen_stream.api import ChatModel

def answer_limit(model: ChatModel, sampling: SamplingFields) -> int:
    """The answer's token limit the job runs with: the request's, else the model's default (never the rest of the
    window, as for chats: the file fills that)."""
    return int(sampling.max_tokens or model.default_params.max_new_tokens)


async def fim_job(model: ChatModel, job: ChatJob,
                  build: Callable[[FimPrompter, FimBudget], list[FimPrompt]]) -> tuple[ChatJob, list[FimPrompt]]:
    """``job`` made to continue the FIM prompts ``build`` makes (one per raw prompt), each within the context window
    the answer leaves, ending also at the model's FIM tokens."""
    limit = answer_limit(model, job.sampling)
    budget = FimBudget(total=model.context_length - limit)
    if budget.total < 3:
        raise APIError(400, f"max tokens {limit} leave no room for a prompt in the context window of "
                            f"{model.context_length}", "invalid_request_error", code="context_length_exceeded")

    def prepare() -> list[FimPrompt]:
        try:
            return build(model.fim_prompter(), budget)
        except NoFimError as exc:
            raise APIError(400, str(exc), "invalid_request_error", code="fim_not_supported") from exc

    prompts = await prepare_off_loop(prepare)
    stops = tuple(dict.fromkeys([*job.sampling.stop_token_ids, *model.fim_prompter().tokens.stop_ids]))
    sampling = replace(job.sampling, max_tokens=limit, stop_token_ids=stops)
    return replace(job, messages=[], options={}, sampling=sampling, prompts=[p.ids for p in prompts]), prompts


def supports_fim(model: ChatModel) -> bool:
    """Whether the model has FIM tokens (a few vocabulary look-ups)."""
    return fim_tokens(model.tokenizer) is not None
