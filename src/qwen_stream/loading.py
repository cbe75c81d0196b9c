"""From a model name to what a ChatModel is made of: tokenizer, sampling defaults, stop ids and a runner.

``models/`` finds and loads the files; ``engine/`` builds the runner that computes on them. This module only puts
the two together, so that neither has to import the other's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from qwen_stream.engine.runner import ModelRunner
from qwen_stream.types import SamplingParams


@dataclass(slots=True)
class ModelComponents:
    name: str
    tokenizer: Any
    runner: ModelRunner
    default_params: SamplingParams
    eos_token_ids: tuple[int, ...]
    context_length: int


def load_components(model: str | None, *, runner: str = "auto", device: str | None = "cpu",
                    dtype: str | None = None, max_slots: int = 16, context_length: int | None = None,
                    threads: int | None = None, quantize: str | None = None,
                    progress: bool = True) -> ModelComponents:
    """Load ``model`` (alias, HF directory, .gguf file or hub id) and build its runner (see engine/build.py)."""
    from qwen_stream.engine.build import build_runner, check_runner_options
    from qwen_stream.engine.devices import configure_threads, resolve_device
    from qwen_stream.models import loader

    check_runner_options(runner, quantize, max_slots, context_length)
    resolve_device(device)  # an unavailable device fails before anything is downloaded or loaded
    threads = configure_threads(threads)
    source = loader.resolve_source(model, progress=progress)
    tokenizer = loader.load_tokenizer(source, progress=progress)
    defaults = SamplingParams(**loader.load_generation_defaults(source))
    eos_ids = tuple(loader.chat_stop_token_ids(tokenizer))
    built = build_runner(source, runner, device=device, dtype=dtype, max_slots=max_slots,
                         context_length=context_length, threads=threads, quantize=quantize,
                         calibration=_calibration(tokenizer) if quantize else None, progress=progress)
    return ModelComponents(name=source.name, tokenizer=tokenizer, runner=built, default_params=defaults,
                           eos_token_ids=eos_ids, context_length=built.max_seq_len)


def _calibration(tokenizer: Any) -> Sequence[int]:
    from qwen_stream.engine.smooth import calibration_token_ids

    return calibration_token_ids(tokenizer)
