"""The seed's interface, kept: Qwen-7B-Chat's ``model.chat_stream(tokenizer, query, history, generation_config)``.

Change only the import lines of the seed's examples::

    from qwen_stream.compat import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, set_seed

and they run on our engine: ``chat_stream`` yields the growing answer, ``chat`` returns ``(response, history)``
with ``history`` as (query, response) pairs.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from transformers import GenerationConfig as HFGenerationConfig
from transformers import set_seed

from qwen_stream.api import ChatModel, History
from qwen_stream.types import SamplingParams

__all__ = ["AutoModelForCausalLM", "AutoTokenizer", "CompatChatModel", "GenerationConfig", "set_seed"]

logger = logging.getLogger(__name__)


class GenerationConfig(HFGenerationConfig):
    """transformers' GenerationConfig; ``from_pretrained`` also understands our aliases and GGUF files."""

    @classmethod
    def from_pretrained(cls, name: str, *args: Any, **kwargs: Any) -> GenerationConfig:  # type: ignore[override]
        from qwen_stream.models import sources

        kwargs.pop("trust_remote_code", None)
        kwargs.pop("resume_download", None)
        source = sources.resolve_source(name, progress=True)
        defaults = sources.load_generation_defaults(source)
        do_sample = defaults.get("temperature", 1.0) > 0
        return cls(do_sample=do_sample, **defaults)


def params_from_generation_config(config: HFGenerationConfig | None, base: SamplingParams) -> SamplingParams:
    """Map transformers' generation settings onto ours; anything unset keeps the model's default."""
    if config is None:
        return base
    changes: dict[str, Any] = {}
    if getattr(config, "do_sample", True) is False:
        changes["temperature"] = 0.0
    elif config.temperature is not None:
        changes["temperature"] = float(config.temperature)
    for ours, theirs in (("top_p", "top_p"), ("top_k", "top_k"), ("repetition_penalty", "repetition_penalty"),
                         ("max_new_tokens", "max_new_tokens")):
        value = getattr(config, theirs, None)
        if value is not None:
            changes[ours] = value
    eos = getattr(config, "eos_token_id", None)
    if eos is not None:
        changes["stop_token_ids"] = tuple(eos if isinstance(eos, list) else [eos])
    stop_words = getattr(config, "stop_strings", None)
    if stop_words:
        changes["stop"] = tuple([stop_words] if isinstance(stop_words, str) else stop_words)
    return base.with_(**changes)


class CompatChatModel:
    """What ``AutoModelForCausalLM.from_pretrained`` returns: a ChatModel with Qwen-7B-Chat's methods."""

    def __init__(self, model: ChatModel) -> None:
        self.model = model
        self.generation_config = GenerationConfig(do_sample=not model.default_params.greedy,
                                                  temperature=model.default_params.temperature,
                                                  top_p=model.default_params.top_p,
                                                  top_k=model.default_params.top_k,
                                                  repetition_penalty=model.default_params.repetition_penalty,
                                                  max_new_tokens=model.default_params.max_new_tokens)

    def eval(self) -> CompatChatModel:
        return self

    def _params(self, generation_config: HFGenerationConfig | None) -> SamplingParams:
        return params_from_generation_config(generation_config or self.generation_config, self.model.default_params)

    def chat_stream(self, tokenizer: Any, query: str, history: History = None, system: str | None = None,
                    generation_config: HFGenerationConfig | None = None, **kwargs: Any) -> Iterator[str]:
        """Yields the growing answer. ``tokenizer`` is accepted for the seed's signature; the model's own is used."""
        return self.model.chat_stream(query, history, system=system, params=self._params(generation_config))

    def chat(self, tokenizer: Any, query: str, history: History = None, system: str | None = None,
             generation_config: HFGenerationConfig | None = None, **kwargs: Any) -> tuple[str, list[tuple[str, str]]]:
        return self.model.chat(query, history, system=system, params=self._params(generation_config))

    def close(self) -> None:
        self.model.close()


class AutoModelForCausalLM:
    """Loads through qwen-stream; takes the seed's keyword arguments (device_map, trust_remote_code, ...)."""

    @staticmethod
    def from_pretrained(name: str, *, device_map: str | None = None, torch_dtype: Any = None, dtype: Any = None,
                        runner: str = "auto", **kwargs: Any) -> CompatChatModel:
        ignored = set(kwargs) - {"trust_remote_code", "resume_download", "low_cpu_mem_usage"}
        if ignored:
            logger.info("ignoring from_pretrained arguments: %s", ", ".join(sorted(ignored)))
        device = "cpu" if device_map in (None, "cpu") else "auto"
        chosen_dtype = dtype if dtype is not None else torch_dtype
        dtype_name = str(chosen_dtype).replace("torch.", "") if chosen_dtype not in (None, "auto") else None
        return CompatChatModel(ChatModel.load(name, device=device, dtype=dtype_name, runner=runner))


class AutoTokenizer:
    @staticmethod
    def from_pretrained(name: str, **kwargs: Any) -> Any:
        from qwen_stream.models import sources

        return sources.load_tokenizer(sources.resolve_source(name, progress=True))
