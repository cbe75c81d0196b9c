"""How many tokens an answer may take: the one rule for every route of every protocol and the Python API.

A request that gives its own length (``max_tokens``, ``num_predict``, ``n_predict``, ``max_new_tokens``) gets it, at
most the server's cap (``--max-tokens-cap``: an answer cut there ends with finish reason "length", as llama-server's
``--n-predict`` caps requests), and its prompt must leave that much room in the window (history is folded to make
it, or the request is refused). One that gives none gets the model's usual answer length, or, where the front end
says so (the HTTP server, as OpenAI and vLLM do), the rest of the window; at most the cap too. Pure arithmetic.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class LengthPolicy:
    """What an answer without a length of its own may take."""

    rest_of_window: bool = False  # True: run to the window's end; False: the model's usual answer length
    cap: int | None = None  # at most this many tokens (serve --max-tokens-cap)
    # A conversation too long for the window: True drops its oldest turns (the Python API's default, Ollama's and
    # Responses' truncation "auto"); False refuses it with its size (OpenAI, Anthropic, llama.cpp servers).
    fold_history: bool = True

    def __post_init__(self) -> None:
        if self.cap is not None and self.cap < 1:
            raise ValueError(f"the answer length cap must be >= 1, got {self.cap}")

    def without_rest_of_window(self) -> LengthPolicy:
        """For prompts that fill the window themselves (fill-in-the-middle: the file does)."""
        return LengthPolicy(rest_of_window=False, cap=self.cap, fold_history=self.fold_history)


USUAL_LENGTH = LengthPolicy()  # the Python API's: an answer without a length gets the model's usual one
NO_FOLDING = LengthPolicy(fold_history=False)  # the Python API's, with a too-long conversation an error instead


@dataclass(slots=True, frozen=True)
class AnswerRoom:
    """``reserve``: room the prompt is made to leave in the window (history folded for it); ``limit``: the most the
    answer may take, then bounded by what the prompt really leaves (``for_prompt``). ``flexible``: no length was
    asked for and the answer may take the rest of the window, so a prompt may leave less than ``reserve``."""

    reserve: int
    limit: int
    flexible: bool = False

    @property
    def required(self) -> int:
        """The room a prompt must leave, or the request is refused."""
        return 1 if self.flexible else self.reserve

    def for_prompt(self, prompt_tokens: int, window: int) -> int:
        """The answer's length once the prompt is known: the limit, within what the window has left."""
        return max(1, min(self.limit, window - prompt_tokens))


def longest_answer(window: int) -> int:
    """The most any answer can take: a prompt needs at least one token."""
    return max(1, window - 1)


def answer_room(requested: int | None, policy: LengthPolicy, *, window: int, default: int) -> AnswerRoom:
    """The rule (see the module docstring). ``default``: the model's usual answer length."""
    if requested is not None:
        capped = requested if policy.cap is None else min(requested, policy.cap)
        return AnswerRoom(capped, capped)
    cap = policy.cap if policy.cap is not None else window
    usual = min(default, cap, longest_answer(window))
    if policy.rest_of_window:
        return AnswerRoom(usual, min(window, cap), flexible=True)
    return AnswerRoom(usual, usual)

