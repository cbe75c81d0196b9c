"""llama.cpp's ``POST /infill`` (what llama.vscode and llama.vim send): the body, and the answer's JSON.

Fields read: ``input_prefix``, ``input_suffix``, ``input_extra`` (``[{filename, text}]``, other files as context),
``prompt`` (the text before the cursor on its line, put after the prefix as llama.cpp does), ``n_predict`` (0: a
warm-up that only fills the prompt cache; -1: the server's answer limit), ``n_indent``, ``t_max_predict_ms``,
``stream``, ``stop``, ``ignore_eos`` and the sampling fields ``temperature``, ``top_k``, ``top_p``, ``min_p``,
``seed``, ``repeat_penalty``, ``presence_penalty``, ``frequency_penalty`` with llama.cpp's defaults.
``samplers`` names the samplers used (one left out is off, as in llama.cpp: no ``temperature`` means sampling
at temperature 1); our order is fixed, and llama.cpp's ``infill`` sampler (which favours ending the middle) is
accepted but not applied. ``cache_prompt`` and ``t_max_prompt_ms`` are accepted: prefix reuse is always on, and
llama.cpp does not implement ``t_max_prompt_ms`` either. Fields that would change the answer and that this server
does not do (grammars, LoRA, mirostat, ...) are a 400.
"""

from __future__ import annotations

from typing import Any

from pydantic import ConfigDict, Field

from qwen_stream.inputs.fim import ExtraFile, FimInput
from qwen_stream.server.pipeline.bodies import StrictBody, unsupported
from qwen_stream.server.pipeline.sampling_fields import SamplingFields
from qwen_stream.types import StreamEvent

SAMPLERS = ("top_k", "top_p", "min_p", "temperature", "infill", "penalties")
# llama.cpp fields that change the answer, and the value at which they do nothing (accepted when sent so).
_NEUTRAL: dict[str, Any] = {
    "grammar": "", "json_schema": None, "n_probs": 0, "logit_bias": [], "mirostat": 0, "dry_multiplier": 0.0,
    "xtc_probability": 0.0, "typical_p": 1.0, "dynatemp_range": 0.0, "lora": [], "n_keep": 0, "n_cmpl": 1,
    "top_n_sigma": -1.0, "post_sampling_probs": False, "spm_infill": False,
}


class InputChunk(StrictBody):
    text: str
    filename: str = "tmp"  # llama.cpp's name for a chunk without one


class InfillRequest(StrictBody):
    model_config = ConfigDict(strict=True, extra="allow")  # extras are looked at for _NEUTRAL only

    input_prefix: str
    input_suffix: str
    input_extra: list[InputChunk] = Field(default_factory=list)
    prompt: str = ""
    model: str | None = None
    n_predict: int = -1
    n_indent: int = Field(default=0, ge=0)
    t_max_predict_ms: float = 0.0
    t_max_prompt_ms: float = -1.0
    cache_prompt: bool = True
    stream: bool = False
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    seed: int = -1
    stop: list[str] = Field(default_factory=list)
    ignore_eos: bool = False
    samplers: list[str] | None = None
    response_fields: list[str] | None = None
    id_slot: int = -1  # which slot: ours are chosen by the prompt's cached prefix

    def check_supported(self) -> None:
        extras = self.model_extra or {}
        for name, neutral in _NEUTRAL.items():
            if name in extras and extras[name] not in (neutral, None):
                raise unsupported(name, "not supported by this server's /infill")
        unknown = sorted(set(self.samplers or ()) - set(SAMPLERS))
        if unknown:
            raise unsupported("samplers", f"{', '.join(unknown)} not supported (supported: {', '.join(SAMPLERS)})")

    @property
    def warm_up(self) -> bool:
        """``n_predict: 0``: fill the prompt cache and answer nothing (llama.vscode sends one as the file opens)."""
        return self.n_predict == 0

    def sampling(self) -> SamplingFields:
        on = set(SAMPLERS if self.samplers is None else self.samplers)
        penalties = "penalties" in on or self.samplers is None
        limit = 1 if self.warm_up else (self.n_predict if self.n_predict > 0 else None)
        return SamplingFields(
            max_tokens=limit, temperature=max(0.0, self.temperature) if "temperature" in on else 1.0,
            top_k=self.top_k if "top_k" in on and self.top_k > 0 else 0,
            top_p=self.top_p if "top_p" in on and 0 < self.top_p < 1 else 1.0,
            min_p=self.min_p if "min_p" in on and self.min_p > 0 else 0.0,
            repetition_penalty=self.repeat_penalty if penalties else 1.0,
            presence_penalty=self.presence_penalty if penalties else 0.0,
            frequency_penalty=self.frequency_penalty if penalties else 0.0,
            seed=self.seed if self.seed >= 0 else None, stop=tuple(self.stop) or None, ignore_eos=self.ignore_eos)

    def fim_input(self) -> FimInput:
        """llama.cpp's layout: the other files as context, then the current file with ``prompt`` after the prefix."""
        extra = tuple(ExtraFile(c.filename, c.text) for c in self.input_extra)
        return FimInput(self.input_prefix, self.input_suffix, repo_level=True, prompt=self.prompt, extra=extra)


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
