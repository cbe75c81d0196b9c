"""llama.cpp's request fields, shared by ``POST /completion`` and ``POST /infill`` (which "accepts all the options of
/completion"), and ``/completion``'s own body.

Read: ``n_predict`` (0: only fill the prompt cache; -1: the server's answer limit), ``stream``, ``stop``,
``ignore_eos``, ``temperature``, ``top_k``, ``top_p``, ``min_p``, ``seed``, ``repeat_penalty``,
``presence_penalty``, ``frequency_penalty``, ``logit_bias`` (``[[id, bias | false], ...]`` or ``{"id": bias}``),
``n_probs`` (each token's probabilities), ``grammar`` (GBNF) and ``json_schema`` (honoured by the grammar engine),
``n_indent`` and ``t_max_predict_ms`` (an editor's rules), ``n_cache_reuse`` (this request's least cached run moved
into place past the shared prefix, 0: none; unset: the server's ``--cache-reuse``, as in llama-server),
``return_tokens``, ``response_fields``, with llama.cpp's defaults. ``samplers`` names the samplers used (one left out is off: no ``temperature`` means sampling at
temperature 1); our order is fixed. Samplers this server does not have (``dry``, ``typ_p``, ``xtc``,
``top_n_sigma``) may be named, as llama.cpp's clients always name them, while their parameters leave them off;
llama.cpp's ``infill`` sampler (which favours ending the middle) is accepted, as llama.vscode always sends it, but
not applied. Anything else that would change the answer is a 400 naming it (``REFUSED``), and a field llama.cpp
does not have is a 400 too.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import Field

from qwen_stream.inputs.output_format import OutputFormat, one_format
from qwen_stream.server.pipeline.bodies import Refused, StrictBody, unsupported
from qwen_stream.server.pipeline.sampling_fields import SamplingFields
from qwen_stream.types import StreamEvent

SAMPLERS = ("top_k", "top_p", "min_p", "temperature", "penalties", "infill")
# Named by llama.cpp's clients (its default list): accepted while their parameters keep them off (REFUSED below).
IDLE_SAMPLERS = ("dry", "typ_p", "xtc", "top_n_sigma")

_OFF = "not supported by this server"
LLAMA_REFUSED: Mapping[str, Refused] = {
    "mirostat": Refused(f"mirostat sampling is {_OFF}", (0,)),
    "dry_multiplier": Refused(f"DRY sampling is {_OFF}", (0.0,)),
    "xtc_probability": Refused(f"XTC sampling is {_OFF}", (0.0,)),
    "typical_p": Refused(f"typical sampling is {_OFF}", (1.0,)),
    "top_n_sigma": Refused(f"top-n-sigma sampling is {_OFF}", (-1.0,)),
    "dynatemp_range": Refused(f"dynamic temperature is {_OFF}", (0.0,)),
    "min_keep": Refused(f"min_keep is {_OFF}", (0,)),
    "post_sampling_probs": Refused(f"post-sampling probabilities are {_OFF}: n_probs reports log-probabilities",
                                   (False,)),
    "lora": Refused(f"per-request LoRA adapters are {_OFF}", ([],)),
    "n_keep": Refused("context shifting is not done here (a prompt over the window is refused)", (0,)),
    "n_cmpl": Refused("several completions per request are not supported: send one request per completion", (1,)),
    "n_discard": Refused("context shifting is not done here", (0,)),
    "multimodal_data": Refused("multimodal input is not supported: the model reads text"),
}
LLAMA_HARMLESS: Mapping[str, str] = {
    "cache_prompt": "prefix reuse is always on; it leaves the answer as it is",
    "id_slot": "slots are chosen by the prompt's cached prefix; the answer is the same in any slot",
    "t_max_prompt_ms": "llama.cpp does not implement it either",
    "timings_per_token": "timings come with the last chunk",
    "return_progress": "prompt progress reports are extra chunks, not the answer",
    "sse_ping_interval": "keep-alive comments, not the answer",
    "dynatemp_exponent": "read only with dynatemp_range, which is refused unless 0",
    "mirostat_tau": "read only with mirostat, which is refused unless 0",
    "mirostat_eta": "read only with mirostat, which is refused unless 0",
    "dry_base": "read only with dry_multiplier, which is refused unless 0",
    "dry_allowed_length": "read only with dry_multiplier, which is refused unless 0",
    "dry_penalty_last_n": "read only with dry_multiplier, which is refused unless 0",
    "dry_sequence_breakers": "read only with dry_multiplier, which is refused unless 0",
    "xtc_threshold": "read only with xtc_probability, which is refused unless 0",
    "penalize_nl": "an old field llama.cpp no longer reads",
}


class LlamaSampling(StrictBody):
    """The fields /completion and /infill share (see the module docstring)."""

    HARMLESS: ClassVar[Mapping[str, str]] = LLAMA_HARMLESS
    REFUSED: ClassVar[Mapping[str, Refused]] = LLAMA_REFUSED

    model: str | None = None
    n_predict: int = -1
    n_indent: int = Field(default=0, ge=0)
    t_max_predict_ms: float = 0.0
    stream: bool = False
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    repeat_last_n: int = -1  # penalties here look at the whole prompt and answer (-1); 0 turns them off
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int = -1
    stop: list[str] = Field(default_factory=list)
    ignore_eos: bool = False
    logit_bias: list[list[Any]] | dict[str, float | bool] | None = None
    n_probs: int = Field(default=0, ge=0, le=20)
    grammar: str = ""
    json_schema: dict[str, Any] | None = None
    samplers: list[str] | None = None
    return_tokens: bool = False
    response_fields: list[str] | None = None
    n_cache_reuse: int | None = Field(default=None, ge=0)

    def check_samplers(self) -> None:
        unknown = sorted(set(self.samplers or ()) - set(SAMPLERS) - set(IDLE_SAMPLERS))
        if unknown:
            raise unsupported("samplers", f"{', '.join(unknown)} not supported (supported: {', '.join(SAMPLERS)})")

    @property
    def warm_up(self) -> bool:
        """``n_predict: 0``: fill the prompt cache and answer nothing (llama.vscode sends one as a file opens)."""
        return self.n_predict == 0

    def sampling(self) -> SamplingFields:
        self.check_samplers()
        on = set(SAMPLERS if self.samplers is None else self.samplers)
        penalties = ("penalties" in on or self.samplers is None) and self.repeat_last_n != 0
        active = penalties and (self.repeat_penalty != 1.0 or self.presence_penalty or self.frequency_penalty)
        if active and self.repeat_last_n != -1:
            raise unsupported("repeat_last_n", "penalties here look at the whole prompt and answer: give -1 (or 0 "
                                               "to turn them off)")
        limit = 1 if self.warm_up else (self.n_predict if self.n_predict > 0 else None)
        return SamplingFields(
            max_tokens=limit, temperature=max(0.0, self.temperature) if "temperature" in on else 1.0,
            top_k=self.top_k if "top_k" in on and self.top_k > 0 else 0,
            top_p=self.top_p if "top_p" in on and 0 < self.top_p < 1 else 1.0,
            min_p=self.min_p if "min_p" in on and self.min_p > 0 else 0.0,
            repetition_penalty=self.repeat_penalty if penalties else 1.0,
            presence_penalty=self.presence_penalty if penalties else 0.0,
            frequency_penalty=self.frequency_penalty if penalties else 0.0,
            seed=self.seed if self.seed >= 0 else None, stop=tuple(self.stop) or None, ignore_eos=self.ignore_eos,
            logprobs=self.n_probs or None, logit_bias=_logit_bias(self.logit_bias), output=self.output(),
            cache_reuse=self.n_cache_reuse)

    def output(self) -> OutputFormat | None:
        """``grammar`` (GBNF) or ``json_schema`` (``{}``: any JSON); both at once is a 400, as in llama.cpp."""
        return one_format([OutputFormat.grammar(self.grammar) if self.grammar else None,
                           None if self.json_schema is None else OutputFormat.json_schema(self.json_schema)])


class CompletionRequest(LlamaSampling):
    """``POST /completion``: one prompt, as text, token ids, or text and ids mixed (``[12, "text", 34]``)."""

    prompt: str | list[Any]

    def prompt_value(self) -> str | list[int | str]:
        """The one prompt; several (a list of strings, or of lists) are refused by name."""
        if isinstance(self.prompt, str):
            return self.prompt
        if not self.prompt:
            raise unsupported("prompt", "the prompt is empty")
        several = all(isinstance(p, str) for p in self.prompt) and len(self.prompt) > 1
        if several or any(isinstance(p, (list, dict)) for p in self.prompt):
            raise unsupported("prompt", "several prompts in one request are not supported: send one request "
                                        "per prompt")
        if not all(isinstance(p, str) or (isinstance(p, int) and not isinstance(p, bool)) for p in self.prompt):
            raise unsupported("prompt", "a prompt list holds token ids and text only")
        return list(self.prompt)


def _logit_bias(bias: list[list[Any]] | dict[str, float | bool] | None) -> dict[str, float] | None:
    """llama.cpp's ``[[id, bias], ...]`` or ``{"id": bias}`` as OpenAI's map; ``false`` (never) is -100."""
    if not bias:
        return None
    pairs = bias.items() if isinstance(bias, dict) else [tuple(pair) for pair in bias]
    out: dict[str, float] = {}
    for pair in pairs:
        if len(pair) != 2 or isinstance(pair[0], bool) or not isinstance(pair[0], int | str) \
                or not isinstance(pair[1], int | float | bool) or pair[1] is True:
            raise unsupported("logit_bias", f"expected [token id, bias or false] pairs, got {list(pair)!r:.60}")
        if isinstance(pair[0], str) and not pair[0].isdigit():
            raise unsupported("logit_bias", "a bias for a text (not a token id) is not supported: give token ids")
        out[str(pair[0])] = -100.0 if pair[1] is False else float(pair[1])
    return out


def timings(event: StreamEvent | None, predicted_n: int) -> dict[str, float]:
    """llama.cpp's ``timings``: prompt (to the first token) and prediction times, in ms, and the counts."""
    if event is None:
        return {}
    ttft = event.time_to_first_token_s if event.time_to_first_token_s is not None else event.elapsed_s
    prompt_n = max(0, event.num_prompt_tokens - event.num_cached_tokens)
    prompt_ms, predicted_ms = ttft * 1000, max(0.0, event.elapsed_s - ttft) * 1000
    return {"cache_n": event.num_cached_tokens, "prompt_n": prompt_n, "prompt_ms": prompt_ms,
            "prompt_per_token_ms": prompt_ms / prompt_n if prompt_n else 0.0,
            "prompt_per_second": 1000 * prompt_n / prompt_ms if prompt_ms else 0.0,
            "predicted_n": predicted_n, "predicted_ms": predicted_ms,
            "predicted_per_token_ms": predicted_ms / predicted_n if predicted_n else 0.0,
            "predicted_per_second": 1000 * predicted_n / predicted_ms if predicted_ms else 0.0}


def pick_fields(body: dict[str, Any], fields: list[str] | None) -> dict[str, Any]:
    """llama.cpp's ``response_fields``: only these, ``a/b`` moved to the top as ``b``; a missing one left out."""
    if fields is None:
        return body
    picked: dict[str, Any] = {}
    for path in fields:
        value: Any = body
        for key in path.split("/"):
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None:
            picked[path.rsplit("/", 1)[-1]] = value
    return picked
