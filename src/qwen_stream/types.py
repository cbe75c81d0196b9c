"""Plain data shared by every layer: sampling parameters, engine outputs, stream events.

Nothing here imports torch, so front ends and tests of pure logic stay light.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Protocol

from qwen_stream.errors import InvalidParameterError

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt


class FinishReason(str, enum.Enum):
    STOP = "stop"  # a stop token id or a stop string
    LENGTH = "length"  # max_new_tokens or the context window
    ABORT = "abort"  # cancelled by the caller, a disconnect or an error
    TOOL_CALLS = "tool_calls"  # the answer ended after calling tools (set by the output layer, never the engine)


class TokenMatcher(Protocol):
    """One request's place in a grammar, driven by the engine core on token ids only (made by a TokenConstraint)."""

    def mask_logits(self, logits: Any) -> None:
        """Set to -inf, in place, every entry of this row of logits ([vocab] tensor) the grammar forbids next."""

    def accept_token(self, token_id: int) -> bool:
        """Advance past token_id; False when the grammar forbids it (the state is then unchanged)."""

    def is_terminated(self) -> bool:
        """The grammar has ended (its stop token was accepted): nothing may follow."""


class TokenConstraint(Protocol):
    """A compiled grammar (JSON schema, tool calls): immutable and shared; each request gets its own matcher.

    Built at the edge from the tokenizer (qwen_stream/inputs/grammars.py); the core only calls ``new_matcher``."""

    def new_matcher(self) -> TokenMatcher: ...


# Below this temperature sampling is greedy, as in vLLM: dividing logits by a tiny number overflows float32.
GREEDY_TEMPERATURE = 1e-5
# Seeds as OpenAI accepts them (int64); torch's generator takes any 64-bit value, so seed + i wraps into it.
SEED_MIN, SEED_MAX = -(2**63), 2**63 - 1


def wrap_seed(seed: int) -> int:
    """``seed`` brought into int64 by wrapping (the seeds of choices 1..n-1 are seed + i)."""
    return (seed - SEED_MIN) % 2**64 + SEED_MIN


POOLINGS = ("mean", "cls", "last")


@dataclass(slots=True, frozen=True)
class PoolingParams:
    """Pool, don't sample: the prompt is prefilled (chunked like any prompt) and the request ends with one vector
    and no tokens (``TokenOutput.embedding``).

    ``pooling`` says which final hidden states (after the model's last norm) make it: their mean, the first
    position's (CLS) or the last position's; ``normalize`` scales it to unit length. With ``logits_of`` the vector
    is instead the last position's logits of those token ids, in that order (a classifier over them: Qwen3-Reranker
    reads ("no", "yes")); ``pooling`` and ``normalize`` then do not apply."""

    pooling: str = "last"
    normalize: bool = True
    logits_of: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "logits_of", tuple(int(t) for t in self.logits_of))
        if self.pooling not in POOLINGS:
            raise InvalidParameterError("pooling", f"pooling must be one of {', '.join(POOLINGS)}, "
                                                   f"got {self.pooling!r}")
        if any(t < 0 for t in self.logits_of):
            raise InvalidParameterError("logits_of", "logits_of names token ids >= 0")

    @property
    def task(self) -> str:
        """What the engine must be able to do: "embed" (hidden states) or "score" (logits)."""
        return "score" if self.logits_of else "embed"


@dataclass(slots=True, frozen=True)
class SamplingParams:
    """How one request picks its tokens. temperature == 0 means greedy."""

    max_new_tokens: int = 512
    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0  # 0 disables top-k
    min_p: float = 0.0  # drop tokens less likely than min_p times the most likely one (0 disables)
    repetition_penalty: float = 1.0  # HF style, multiplicative, > 1 discourages repeats
    presence_penalty: float = 0.0  # OpenAI style, additive
    frequency_penalty: float = 0.0
    seed: int | None = None
    # The seed was drawn for this request (it gave none, inputs/choices.py): its answer may come from any cached KV.
    # A seed of the request's own means "the same text every time": the engine then reuses only KV that a cold
    # prefill computes bit for bit (engine/sched/chunk_grid.py), whatever the cache holds.
    seed_drawn: bool = False
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    ignore_eos: bool = False
    logprobs: int | None = None  # None: off; N >= 0: the chosen token plus its N best alternatives
    skip_special_tokens: bool = True
    # OpenAI's logit_bias: (token id, bias in [-100, 100]) pairs added to the logits before sampling (greedy too).
    # A mapping is accepted and stored as sorted pairs, so params stay hashable.
    logit_bias: tuple[tuple[int, float], ...] = ()
    # Only tokens this grammar allows are sampled (masked before penalties, temperature, top-p and argmax); when
    # the grammar ends, only a stop token is allowed, so the answer ends with finish_reason "stop".
    constraint: TokenConstraint | None = None
    # Set: pool, don't sample (embeddings, scores; see PoolingParams): the fields above do not apply.
    pooling: PoolingParams | None = None
    # Cache reuse for this request (llama.cpp's per-request n_cache_reuse): cached runs of at least this many tokens
    # may move into its prompt instead of being computed (0: none); None: the engine's setting (--cache-reuse).
    cache_reuse: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, str):
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        object.__setattr__(self, "stop_token_ids", tuple(int(t) for t in self.stop_token_ids))
        object.__setattr__(self, "logit_bias", _bias_pairs(self.logit_bias))
        self.validate()

    def validate(self) -> None:
        def need(ok: bool, param: str, message: str) -> None:
            if not ok:
                raise InvalidParameterError(param, message)

        def finite(value: float) -> bool:
            return isinstance(value, (int, float)) and math.isfinite(value)

        need(isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1, "max_new_tokens",
             f"max_new_tokens must be an integer >= 1, got {self.max_new_tokens!r}")
        need(finite(self.temperature) and self.temperature >= 0.0, "temperature",
             f"temperature must be a finite number >= 0, got {self.temperature!r}")
        need(finite(self.top_p) and 0.0 < self.top_p <= 1.0, "top_p", f"top_p must be in (0, 1], got {self.top_p!r}")
        need(isinstance(self.top_k, int) and self.top_k >= 0, "top_k",
             f"top_k must be an integer >= 0, got {self.top_k!r}")
        need(finite(self.repetition_penalty) and self.repetition_penalty > 0.0, "repetition_penalty",
             f"repetition_penalty must be a finite number > 0, got {self.repetition_penalty!r}")
        need(finite(self.presence_penalty) and -2.0 <= self.presence_penalty <= 2.0, "presence_penalty",
             f"presence_penalty must be in [-2, 2], got {self.presence_penalty!r}")
        need(finite(self.frequency_penalty) and -2.0 <= self.frequency_penalty <= 2.0, "frequency_penalty",
             f"frequency_penalty must be in [-2, 2], got {self.frequency_penalty!r}")
        need(finite(self.min_p) and 0.0 <= self.min_p <= 1.0, "min_p", f"min_p must be in [0, 1], got {self.min_p!r}")
        need(all(token_id >= 0 and math.isfinite(bias) and -100.0 <= bias <= 100.0 for token_id, bias in self.logit_bias),
             "logit_bias", "logit_bias maps token ids >= 0 to biases in [-100, 100]")
        need(self.seed is None or (isinstance(self.seed, int) and SEED_MIN <= self.seed <= SEED_MAX), "seed",
             f"seed must be an integer in [-2**63, 2**63 - 1], got {self.seed!r}")
        need(all(isinstance(s, str) and s for s in self.stop), "stop", "stop strings must be non-empty strings")
        need(self.logprobs is None or 0 <= self.logprobs <= 20, "logprobs",
             f"logprobs must be in [0, 20], got {self.logprobs!r}")
        need(self.cache_reuse is None or (isinstance(self.cache_reuse, int) and self.cache_reuse >= 0), "cache_reuse",
             f"cache_reuse must be an integer >= 0, got {self.cache_reuse!r}")

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_TEMPERATURE or self.top_k == 1

    @property
    def uses_penalties(self) -> bool:
        return self.repetition_penalty != 1.0 or self.presence_penalty != 0.0 or self.frequency_penalty != 0.0

    def with_(self, **changes: Any) -> SamplingParams:
        return replace(self, **changes)


def _bias_pairs(bias: Any) -> tuple[tuple[int, float], ...]:
    items = bias.items() if isinstance(bias, Mapping) else bias
    try:
        return tuple(sorted((int(token_id), float(value)) for token_id, value in items))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"logit_bias must map token ids to numbers, got {bias!r:.80}") from exc


@dataclass(slots=True)
class TokenLogprob:
    token_id: int
    logprob: float
    top: list[tuple[int, float]] = field(default_factory=list)  # best alternatives, most likely first


@dataclass(slots=True)
class TokenOutput:
    """What the engine core hands out for one request after one step: ids only, no text."""

    request_id: str
    new_token_ids: list[int]
    finish_reason: FinishReason | None = None
    num_prompt_tokens: int = 0
    logprobs: list[TokenLogprob] | None = None
    error: str | None = None  # set when the engine failed this request
    num_cached_tokens: int = 0  # prompt tokens whose KV a slot already held (prefix reuse); first output only
    # A pooled request's one output (params.pooling): its vector, float32 [width] (or [len(logits_of)]).
    embedding: npt.NDArray[np.float32] | None = None


@dataclass(slots=True, frozen=True)
class ToolCallDelta:
    """One piece of a streamed tool call, in the order the model wrote it.

    The first piece of call ``index`` carries its ``id`` and ``name`` (``arguments`` may be ""); later pieces carry
    only ``arguments`` fragments. Joined in order, the fragments of one index are exactly that call's final
    ``ToolCall.arguments`` (a JSON object as text, ``"{}"`` for a call without parameters).
    """

    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


@dataclass(slots=True, frozen=True)
class ToolCall:
    """A tool call the model made: ``arguments`` is the JSON text of an object (as OpenAI sends it)."""

    id: str
    name: str
    arguments: str

    def parsed_arguments(self) -> Any:
        """``json.loads(arguments)``; raises ValueError when the model wrote broken JSON (e.g. cut by max tokens)."""
        return json.loads(self.arguments)


@dataclass(slots=True)
class StreamEvent:
    """What a front end receives: the new text, the text so far, and the bookkeeping around it.

    With a reasoning or tool-call parser (chat requests on templates that support them), ``delta``/``text`` hold
    the answer's content only: ``<think>`` reasoning goes to ``reasoning_delta``/``reasoning`` and tool-call
    markup becomes ``tool_call_deltas`` (this event's pieces) and ``tool_calls`` (every call so far, arguments
    as far as written). ``finish_reason`` is TOOL_CALLS when the answer ended normally after calling tools.
    """

    delta: str
    text: str
    token_ids: list[int]
    finish_reason: FinishReason | None = None
    num_prompt_tokens: int = 0
    num_generated_tokens: int = 0
    time_to_first_token_s: float | None = None
    elapsed_s: float = 0.0
    logprobs: list[TokenLogprob] | None = None
    num_cached_tokens: int = 0  # of the prompt tokens, those served from a cached prefix instead of prefilled
    reasoning_delta: str = ""
    reasoning: str = ""
    tool_call_deltas: list[ToolCallDelta] = field(default_factory=list)
    tool_calls: list[ToolCall] = field(default_factory=list)
    stop_string: str | None = None  # on the last event: the stop string that ended the answer, if one did

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def tokens_per_second(self) -> float:
        """Decode speed after the first token, the figure people compare."""
        if self.time_to_first_token_s is None or self.num_generated_tokens < 2:
            return 0.0
        decode_time = self.elapsed_s - self.time_to_first_token_s
        return (self.num_generated_tokens - 1) / decode_time if decode_time > 0 else 0.0
