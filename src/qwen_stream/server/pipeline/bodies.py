"""Request bodies parsed and validated in a worker thread, with their schemas still in the OpenAPI document, and
the rule that nothing a client sends is silently ignored.

FastAPI validates a declared body model on the event loop: a 4.5 MB body of 100,000 messages held it for two
seconds, and /health and every stream with it. Routes here read the raw bytes (cheap) and validate off the loop,
on every protocol's routes.

Every body is a ``StrictBody``: a field it declares is read; a field it does not declare is a 400 naming it
(``UnsupportedFieldError``) unless the body lists it as ``HARMLESS`` (clients send it, and leaving it unread
changes nothing in the answer: the list says why) or as ``REFUSED`` at a value that changes nothing (llama.cpp's
``mirostat: 0``, say). tests/server/protocols/test_field_audit.py holds every body to this.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import anyio
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel, ConfigDict, ValidationError

from qwen_stream.errors import UnsupportedFieldError
from qwen_stream.server.pipeline.limits import check_encodable
from qwen_stream.server.wire.errors import APIError

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
_REF = "#/components/schemas/{model}"


async def parse_body(request: Request, model: type[M]) -> M:
    """The request's JSON body as ``model``; invalid bodies raise RequestValidationError (our 400 handler)."""
    body, _ = await parse_body_and(request, model, _nothing)
    return body


async def parse_body_and(request: Request, model: type[M], then: Callable[[M], T]) -> tuple[M, T]:
    """The body as ``model`` and what ``then`` makes of it (a protocol's translation into a ChatJob: 100,000
    messages take half a second), both in one worker thread."""
    raw = await request.body()
    try:
        return await anyio.to_thread.run_sync(_validate_then, model, raw, then)
    except ValidationError as exc:
        # include_input=False: the offending value may be megabytes of text
        raise RequestValidationError(exc.errors(include_url=False, include_input=False)) from None


def _nothing(_body: object) -> None:
    return None


def _validate_then(model: type[M], raw: bytes, then: Callable[[M], T]) -> tuple[M, T]:
    body = _validate(model, raw)
    check_fields(body)
    return body, then(body)


def _validate(model: type[M], raw: bytes) -> M:
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        if not any(error["type"] == "json_invalid" for error in exc.errors()):
            raise
        # pydantic's parser refuses a lone surrogate escape ("\ud800") with "unexpected end of hex escape";
        # Python's accepts it, so the 400 can name the field holding the broken text, for every protocol.
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):
            raise exc from None
        check_encodable(data)
        return model.model_validate(data)


def openapi_body(model: type[BaseModel]) -> dict[str, Any]:
    """``openapi_extra`` for a route that parses ``model`` itself: the same requestBody FastAPI would document."""
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": _REF.format(model=model.__name__)}}}}}


def document_bodies(app: FastAPI, models: list[type[BaseModel]]) -> None:
    """Add the body models' schemas to the app's OpenAPI components (routes refer to them by $ref)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description,
                                 routes=app.routes)
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for model in models:
                body = model.model_json_schema(ref_template=_REF)
                components.update(body.pop("$defs", {}))
                components[model.__name__] = body
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


@dataclass(slots=True, frozen=True)
class Refused:
    """A field that would change the answer and that this server does not do: refused by name, unless it holds
    one of the values that change nothing (None always does)."""

    why: str
    neutral: tuple[Any, ...] = ()


class StrictBody(BaseModel):
    """The base of every protocol's request body: strict about types (``"max_tokens": "5"`` is an error, as
    upstream), and about fields (see the module docstring)."""

    model_config = ConfigDict(strict=True, extra="allow")  # extras are checked by check_fields, by name

    # Fields clients send that this body does not declare, each with why leaving it unread changes nothing.
    HARMLESS: ClassVar[Mapping[str, str]] = {}
    # Fields that would change the answer and that are not done here (see Refused).
    REFUSED: ClassVar[Mapping[str, Refused]] = {}


def check_fields(body: BaseModel, where: str = "") -> None:
    """Raise UnsupportedFieldError for the first field of ``body`` (or of a body nested in it) that is unknown, or
    refused at a value that would change the answer. ``where``: the path to ``body`` (``options.``)."""
    if not isinstance(body, StrictBody):
        return
    for name, value in (body.model_extra or {}).items():
        _check_extra(type(body), name, value, f"{where}{name}")
    for name in type(body).model_fields:
        for path, part in _nested(getattr(body, name), f"{where}{name}"):
            check_fields(part, f"{path}.")


def _check_extra(model: type[StrictBody], name: str, value: Any, path: str) -> None:
    if value is None or name in model.HARMLESS:
        return
    refused = model.REFUSED.get(name)
    if refused is None:
        raise UnsupportedFieldError(path, "unknown field: this server does not know it, so it cannot honour it "
                                          "(remove it)")
    if not any(_same(value, neutral) for neutral in refused.neutral):
        raise UnsupportedFieldError(path, refused.why)


def _same(value: Any, neutral: Any) -> bool:
    """JSON equality: ``0`` is ``0.0``, but ``false`` is not ``0``."""
    if isinstance(value, bool) or isinstance(neutral, bool):
        return type(value) is type(neutral) and value == neutral
    return bool(value == neutral)


def _nested(value: Any, path: str) -> list[tuple[str, BaseModel]]:
    """The bodies held by a field, with their paths: itself, or the items of a list of them."""
    if isinstance(value, BaseModel):
        return [(path, value)]
    if isinstance(value, list):
        return [(f"{path}.{k}", item) for k, item in enumerate(value) if isinstance(item, BaseModel)]
    return []


def parse_part(model: type[M], data: object, where: str) -> M:
    """Validate one piece of a body that its protocol types by a field (``{"type": ...}``); errors name ``where``."""
    try:
        part = model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first.get("loc", ()))
        raise APIError(400, f"{where}{'.' + loc if loc else ''}: {first.get('msg', 'invalid value')}",
                       "invalid_request_error", param=where) from exc
    check_fields(part, f"{where}.")
    return part


def unsupported(field_name: str, why: str) -> UnsupportedFieldError:
    """A field that would change what the request means and that this server does not honour: a 400."""
    return UnsupportedFieldError(field_name, why)
