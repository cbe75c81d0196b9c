"""``POST /v1/completions`` with ``suffix`` (Tabby, Continue's OpenAI provider): each prompt is the text before the
cursor, ``suffix`` the text after it, and the choices are the middle, written on the model's FIM tokens.

Everything else is the plain completions route's (the same ChatJob, start_job and renderer): ``n``, ``stream``,
``logprobs``, ``stop``, the sampling fields. ``echo`` with ``suffix`` is a 400, as OpenAI answers. Without
``max_tokens`` the middle may take the model's usual answer length (at most ``--max-tokens-cap``), not the rest of
the window, which the file fills.
"""

from __future__ import annotations

from dataclasses import replace

from qwen_stream.inputs.fim import FimInput
from qwen_stream.server.pipeline.bodies import unsupported
from qwen_stream.server.pipeline.job import ChatJob
from qwen_stream.server.protocols.openai.requests import CompletionRequest


def fim_completion_job(body: CompletionRequest, job: ChatJob) -> ChatJob:
    """The completions ``job`` with each prompt made the text before a gap, ``body.suffix`` the text after it."""
    if body.echo:
        raise unsupported("echo", "echo is not supported with suffix")
    if not all(isinstance(prompt, str) for prompt in body.prompts):
        raise unsupported("prompt", "token ids cannot be filled in the middle: send the text before the cursor")
    suffix = body.suffix or ""
    return replace(job, prompts=None, fim=[FimInput(str(prompt), suffix) for prompt in body.prompts])
