"""``POST /tokenize`` and ``POST /detokenize`` in both shapes clients send: vLLM's and llama.cpp's, on the same routes.

vLLM's: ``{"prompt": text}`` or ``{"messages": [...], "tools": [...]}`` (rendered with the chat template, ended as
a chat request would be) to ``{"count", "max_model_len", "tokens", "token_strs"}``. llama.cpp's: ``{"content":
text, "add_special", "parse_special", "with_pieces"}`` to ``{"tokens": [id, ...]}`` (or ``[{"id", "piece"}]``).
Which one a request is follows from the field that holds its text. ``/detokenize`` takes ``{"tokens": [...]}`` and
answers the text under both names (``prompt``: vLLM's, ``content``: llama.cpp's).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, model_validator

from qwen_stream.server.pipeline.admission import prepare_off_loop
from qwen_stream.server.pipeline.bodies import StrictBody, openapi_body, parse_body
from qwen_stream.server.protocols.openai.requests import ChatMessage
from qwen_stream.server.wire.errors import APIError

if TYPE_CHECKING:
    from qwen_stream.client.loaded_model import LoadedModel


class TokenizeRequest(StrictBody):
    """One of ``prompt`` (vLLM), ``content`` (llama.cpp) or ``messages`` (vLLM: a chat prompt)."""

    model: str | None = None
    prompt: str | None = None
    content: str | None = None
    messages: list[ChatMessage] | None = None
    add_special_tokens: bool = False  # vLLM's name
    add_special: bool = False  # llama.cpp's name
    parse_special: bool = True  # llama.cpp: special tokens spelled in the text are special tokens (else plain text)
    with_pieces: bool = False  # llama.cpp: each token as {"id", "piece"}
    return_token_strs: bool = False  # vLLM: each token's string beside the ids
    tools: list[dict[str, Any]] | None = None
    chat_template_kwargs: dict[str, Any] | None = None
    add_generation_prompt: bool | None = None
    continue_final_message: bool | None = None

    @model_validator(mode="after")
    def _check(self) -> TokenizeRequest:
        if sum(x is not None for x in (self.prompt, self.content, self.messages)) != 1:
            raise ValueError("give one of prompt, content (llama.cpp) or messages")
        return self

    def chat_options(self) -> dict[str, Any]:
        return {"tools": self.tools, "chat_template_kwargs": self.chat_template_kwargs,
                "add_generation_prompt": self.add_generation_prompt,
                "continue_final_message": self.continue_final_message}


class DetokenizeRequest(StrictBody):
    model: str | None = None
    tokens: list[int] = Field(max_length=1_000_000)


TOKENIZE_BODIES: list[type[BaseModel]] = [TokenizeRequest, DetokenizeRequest]


def tokenize_routes(require_model: Callable[[str | None], Awaitable[LoadedModel]]) -> APIRouter:
    """The routes; ``require_model(name)`` resolves a request's ``model`` (absent: the default) to the model."""
    router = APIRouter()

    @router.post("/tokenize", openapi_extra=openapi_body(TokenizeRequest))
    async def tokenize(request: Request) -> JSONResponse:
        body = await parse_body(request, TokenizeRequest)
        model = await require_model(body.model)
        return JSONResponse(await prepare_off_loop(lambda: _tokenized(model, body)))

    @router.post("/detokenize", openapi_extra=openapi_body(DetokenizeRequest))
    async def detokenize(request: Request) -> JSONResponse:
        body = await parse_body(request, DetokenizeRequest)
        model = await require_model(body.model)
        tokenizer = model.inputs.tokenizer
        vocab = len(tokenizer)
        bad = [t for t in body.tokens if not 0 <= t < vocab]
        if bad:
            raise APIError(400, f"tokens holds ids outside this tokenizer's vocabulary of {vocab}: {bad[:5]}",
                           param="tokens")
        text = tokenizer.decode(body.tokens, skip_special_tokens=False)
        return JSONResponse({"prompt": text, "content": text})

    return router


def _tokenized(model: LoadedModel, body: TokenizeRequest) -> dict[str, Any]:
    """The answer in the shape of the request's vocabulary."""
    tokenizer = model.inputs.tokenizer
    if body.content is not None:
        ids = list(tokenizer(body.content, add_special_tokens=body.add_special,
                             split_special_tokens=not body.parse_special)["input_ids"])
        return {"tokens": [_piece(model, i) for i in ids] if body.with_pieces else ids}
    if body.prompt is not None:
        ids = list(tokenizer.encode(body.prompt, add_special_tokens=body.add_special_tokens))
    else:
        messages = [message.as_dict() for message in body.messages or []]
        ids = model.inputs.chat_prompt(messages, **body.chat_options()).ids
    answer: dict[str, Any] = {"count": len(ids), "max_model_len": model.context_length, "tokens": ids}
    if body.return_token_strs:
        answer["token_strs"] = [tokenizer.convert_ids_to_tokens(i) for i in ids]
    return answer


def _piece(model: LoadedModel, token_id: int) -> dict[str, Any]:
    """llama.cpp's piece: the token's text when its bytes are whole UTF-8, else the bytes."""
    _, raw = model.strings.lookup(token_id)
    try:
        return {"id": token_id, "piece": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {"id": token_id, "piece": list(raw)}
