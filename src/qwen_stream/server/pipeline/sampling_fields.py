"""A request's sampling fields in one neutral vocabulary, whatever its protocol calls them, and the one mapping from
them to ``SamplingParams`` overrides (stop strings, logit bias keys and output formats normalised here, once).

Each protocol names its fields its own way (OpenAI ``max_tokens``, Anthropic ``stop_sequences``, Ollama
``options.num_predict`` and ``repeat_penalty``, Responses ``max_output_tokens``); its body only says which of its
fields is which neutral one, by building a ``SamplingFields``. The answer's format (a JSON schema, a regex, a choice,
a grammar: inputs/output_format.py) is one field, ``output``, whichever of its fields a protocol read it from.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from qwen_stream.errors import InvalidParameterError
from qwen_stream.inputs.output_format import OutputFormat


@dataclass(slots=True, frozen=True)
class SamplingFields:
    """What a request asks of sampling; None (or False) keeps the model's default."""

    max_tokens: int | None = None  # None: the answer may take the rest of the window (at most --max-tokens-cap)
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    seed: int | None = None
    stop: str | Sequence[str] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    repetition_penalty: float | None = None
    logprobs: int | None = None  # alternatives to report per token (0: the chosen token's only); None: no logprobs
    logit_bias: Mapping[str, float] | None = None  # token id (as a string, as JSON keys are) -> bias
    ignore_eos: bool = False
    output: OutputFormat | None = None  # what the answer must match (compiled into a grammar by the input side)
    stop_token_ids: tuple[int, ...] = ()  # more ids that end the answer (a FIM prompt: its model's FIM tokens)
    cache_reuse: int | None = None  # llama.cpp's n_cache_reuse: the least cached run moved into the prompt (0: none)

    @property
    def stops(self) -> tuple[str, ...] | None:
        """The stop strings as one tuple (a lone string is one stop string); None for none."""
        if self.stop is None:
            return None
        stops = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
        return stops or None

    def formats(self) -> dict[str, Any]:
        """The output format, for the input processor to compile into a grammar (a chat checks it against
        tool_choice)."""
        return {"output": self.output} if self.output is not None else {}

    def overrides(self) -> dict[str, Any]:
        """``SamplingParams`` overrides (output formats apart: see ``formats``); fields left unset are absent.

        Raises InvalidParameterError for logit_bias keys that are not token ids."""
        fields: dict[str, Any] = {
            "max_new_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
            "top_k": self.top_k, "min_p": self.min_p, "seed": self.seed, "stop": self.stops,
            "presence_penalty": self.presence_penalty, "frequency_penalty": self.frequency_penalty,
            "repetition_penalty": self.repetition_penalty, "logprobs": self.logprobs,
            "ignore_eos": self.ignore_eos or None, "stop_token_ids": self.stop_token_ids or None,
            "logit_bias": _logit_bias(self.logit_bias) if self.logit_bias else None, "cache_reuse": self.cache_reuse,
        }
        return {k: v for k, v in fields.items() if v is not None}


def _logit_bias(bias: Mapping[str, float]) -> dict[int, float]:
    try:
        return {int(token_id): value for token_id, value in bias.items()}
    except ValueError:
        raise InvalidParameterError("logit_bias", "logit_bias keys must be token ids (integers written as "
                                    "strings)") from None
