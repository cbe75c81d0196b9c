"""``POST /v1/completions`` with ``suffix`` (Tabby, Continue's OpenAI provider): each prompt is the text before the
cursor, ``suffix`` the text after it, and the choices are the middle, written on the model's FIM tokens.

Everything else is the plain completions route's (the same ChatJob, start_job and renderer): ``n``, ``stream``,
``logprobs``, ``stop``, the sampling fields. ``echo`` with ``suffix`` is a 400, as OpenAI answers. Without
``max_tokens`` the middle may take the model's default answer length, not the rest of the window, which the file
fills.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qwen_stream.inputs.fim import FimBudget, FimPrompt, FimPrompter
from qwen_stream.server.pipeline.bodies import unsupported
from qwen_stream.server.pipeline.fim_jobs import fim_job
from qwen_stream.server.pipeline.job import ChatJob
from qwen_stream.server.protocols.openai.protocol import CompletionRequest

if TYPE_CHECKING:
    from qwen_stream.server.state import ServerState


async def fim_completion_job(state: ServerState, body: CompletionRequest, job: ChatJob) -> ChatJob:
    """The completions ``job`` with each prompt made into a FIM prompt around ``body.suffix``."""
    if body.echo:
        raise unsupported("echo", "echo is not supported with suffix")
    model, _, _ = await state.resolve(job.model)
    suffix = body.suffix or ""

    def build(prompter: FimPrompter, budget: FimBudget) -> list[FimPrompt]:
        return [prompter.file_level(prompt, suffix, budget) for prompt in body.prompts]

    fim, _ = await fim_job(model, job, build)
    return fim
