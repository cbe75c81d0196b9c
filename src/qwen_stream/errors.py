"""Why a request is refused, as types: every layer raises these, and each front end maps them once.

The HTTP server turns each into its protocol's status and shape in one table (server/wire/refusals.py); the Python
API lets them propagate. Refusals of bad input derive from ``ValueError`` (so ``except ValueError`` keeps working),
the engine's own from ``EngineError``. No torch here.
"""

from __future__ import annotations


class RequestError(ValueError):
    """The request cannot be served as asked; ``param`` names the field at fault where one is (OpenAI's ``param``)."""

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class InvalidParameterError(RequestError):
    """A parameter's value is out of range or of the wrong kind."""

    def __init__(self, param: str, message: str) -> None:
        super().__init__(message, param=param)


class ContextLengthError(RequestError):
    """The prompt (with the answer room asked for) does not fit the context window."""

    def __init__(self, message: str, *, window: int | None = None, prompt_tokens: int | None = None,
                 param: str | None = None, at_least: bool = False) -> None:
        super().__init__(message, param=param)
        self.window = window  # None where the limit was not the window's (a template's fold limit)
        self.prompt_tokens = prompt_tokens  # None where the text was refused before tokenizing
        self.at_least = at_least  # prompt_tokens counts only part of a prompt far over the limit


class GrammarError(RequestError):
    """An output format (JSON schema, regex, choice, grammar) that cannot be compiled; the message quotes the grammar
    library's own, and ``param`` names the field that held it."""


class UnsupportedFieldError(RequestError):
    """A field that would change what the answer means, and that this server or model does not honour."""

    def __init__(self, field: str, why: str) -> None:
        super().__init__(f"{field}: {why}", param=field)
        self.field = field


class UnsupportedTaskError(RequestError):
    """The model cannot do what is asked (fill-in-the-middle without FIM tokens, tools without a template for
    them, ...); ``code`` names it for clients."""

    def __init__(self, message: str, *, code: str, param: str | None = None) -> None:
        super().__init__(message, param=param)
        self.code = code


class UnknownModelError(LookupError):
    """The request names a model this server does not serve."""

    def __init__(self, name: str, served: list[str]) -> None:
        listed = ", ".join(f"`{n}`" for n in served) or "its model (still loading)"
        super().__init__(f"The model `{name}` does not exist: this server serves {listed}")
        self.name = name


class EngineError(RuntimeError):
    """The engine could not serve a request (it is shutting down, or a step failed)."""


class EngineOverloadedError(EngineError):
    """Too many waiting requests: refused at once rather than queued forever."""

    def __init__(self, message: str, retry_after_s: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
