"""``POST /tokenize`` and ``POST /detokenize``, in vLLM's shape: text or chat messages to token ids and back.

A client counts tokens (or checks what a chat prompt looks like to the model) with the model's own tokenizer and
chat template, without generating anything.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter
from pydantic import Field, model_validator

from qwen_stream.inputs.tools import ToolRequest
from qwen_stream.server.protocols.openai.protocol import ChatMessage, _Request, _Response
from qwen_stream.server.wire.errors import APIError

if TYPE_CHECKING:
    from qwen_stream.client.loaded_model import LoadedModel


class TokenizeRequest(_Request):
    """Either ``prompt`` (raw text) or ``messages`` (rendered with the chat template, as a chat request would be)."""

    model: str | None = None
    prompt: str | None = None
    add_special_tokens: bool = False
    messages: list[ChatMessage] | None = None
    tools: list[dict[str, Any]] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    return_token_strs: bool = False

    @model_validator(mode="after")
    def _check(self) -> TokenizeRequest:
        if (self.prompt is None) == (self.messages is None):
            raise ValueError("give either prompt or messages")
        return self


class TokenizeResponse(_Response):
    count: int
    max_model_len: int
    tokens: list[int]
    token_strs: list[str] | None = None


class DetokenizeRequest(_Request):
    model: str | None = None
    tokens: list[int] = Field(max_length=1_000_000)


class DetokenizeResponse(_Response):
    prompt: str


def tokenize_routes(require_model: Callable[[str | None], Awaitable[LoadedModel]]) -> APIRouter:
    """The routes; ``require_model(name)`` resolves a request's ``model`` (absent: the default) to the model."""
    router = APIRouter()

    @router.post("/tokenize", response_model=TokenizeResponse, response_model_exclude_none=True)
    async def tokenize(body: TokenizeRequest) -> TokenizeResponse:
        model = await require_model(body.model)
        try:
            ids = _ids(model, body)
        except (ValueError, TypeError) as exc:
            raise APIError(400, str(exc)) from exc
        strs = [model.inputs.tokenizer.convert_ids_to_tokens(i) for i in ids] if body.return_token_strs else None
        return TokenizeResponse(count=len(ids), max_model_len=model.context_length, tokens=ids, token_strs=strs)

    @router.post("/detokenize", response_model=DetokenizeResponse)
    async def detokenize(body: DetokenizeRequest) -> DetokenizeResponse:
        model = await require_model(body.model)
        tokenizer = model.inputs.tokenizer
        vocab = len(tokenizer)
        bad = [t for t in body.tokens if not 0 <= t < vocab]
        if bad:
            raise APIError(400, f"tokens holds ids outside this tokenizer's vocabulary of {vocab}: {bad[:5]}",
                           param="tokens")
        return DetokenizeResponse(prompt=tokenizer.decode(body.tokens, skip_special_tokens=False))

    return router


def _ids(model: LoadedModel, body: TokenizeRequest) -> list[int]:
    if body.prompt is not None:
        return list(model.inputs.tokenizer.encode(body.prompt, add_special_tokens=body.add_special_tokens))
    tools = ToolRequest.create(body.tools)
    messages = [message.as_dict() for message in body.messages or []]
    prompt = model.inputs.prompter.build(messages, max_prompt_tokens=2**62, tools=tools.tools or None,
                                         template_kwargs=body.chat_template_kwargs)
    return prompt.ids
