"""From a model name to what a ChatModel is made of: tokenizer, sampling defaults, stop ids and a runner (native
engine) or a whole engine backend (vLLM).

``models/`` finds and loads the files; ``engine/`` builds the runner or backend that computes on them. This module
only puts the two together, so that neither has to import the other's job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from qwen_stream.engine.config import EngineConfig
from qwen_stream.engine.runners.base import ModelRunner
from qwen_stream.heap import release_free_heap
from qwen_stream.types import SamplingParams

if TYPE_CHECKING:
    from qwen_stream.engine.spec.draft_model import ModelDrafter
    from qwen_stream.engine.vllm.backend import VllmBackend
    from qwen_stream.engine.vllm.mapping import VllmOptions
    from qwen_stream.models.sources import ModelSource


@dataclass(slots=True)
class ModelComponents:
    name: str
    tokenizer: Any
    runner: ModelRunner
    default_params: SamplingParams
    eos_token_ids: tuple[int, ...]
    context_length: int
    drafter: ModelDrafter | None = None  # a draft model for speculation (draft_model.py), if one was asked for


def load_components(model: str | None, config: EngineConfig | None = None, *,
                    progress: bool = True) -> ModelComponents:
    """Load ``model`` (alias, HF directory, .gguf file or hub id) and build its runner as ``config`` says (see
    engine/runners/build.py)."""
    from qwen_stream.devices import configure_threads, resolve_device
    from qwen_stream.engine.runners.build import build_runner

    config = config or EngineConfig()
    resolve_device(config.device)  # an unavailable device fails before anything is downloaded or loaded
    threads = configure_threads(config.threads)
    source, tokenizer, defaults, eos_ids = _files(model, progress)
    built = build_runner(source, config, threads=threads, progress=progress,
                         calibration=_calibration(tokenizer) if config.quantize else None)
    try:
        drafter = _drafter(config.draft_model, built, threads, progress) if config.draft_model else None
    except BaseException:
        built.close()
        raise
    release_free_heap()  # what loading freed (the tokenizer's parsed JSON, say) leaves our RSS: see heap.py
    return ModelComponents(name=source.name, tokenizer=tokenizer, runner=built, default_params=defaults,
                           eos_token_ids=eos_ids, context_length=built.max_seq_len, drafter=drafter)


def _drafter(name: str, target: ModelRunner, threads: int, progress: bool) -> ModelDrafter:
    from qwen_stream.engine.runners.build import build_drafter
    from qwen_stream.models import sources

    if target.name != "llamacpp":  # said before the draft model is fetched
        raise ValueError(f"a draft model runs on the llama.cpp runner with GGUF files only; the model runs on "
                         f"{target.name}")
    return build_drafter(sources.resolve_source(name, progress=progress), target, threads=threads)


@dataclass(slots=True)
class VllmComponents:
    name: str
    tokenizer: Any
    engine: VllmBackend
    default_params: SamplingParams
    eos_token_ids: tuple[int, ...]


def load_vllm_components(model: str | None, *, options: VllmOptions | None = None, dtype: str | None = None,
                         max_running: int = 16, max_waiting: int = 64, context_length: int | None = None,
                         prefix_cache: bool = True, progress: bool = True) -> VllmComponents:
    """Load ``model``'s tokenizer and defaults here and start vLLM on its Hugging Face checkpoint (a GGUF alias or
    file is converted once and cached, as for the PyTorch runner; a hub id comes from the HF cache or the hub)."""
    import sys

    from qwen_stream.engine.runners.build import serve_length
    from qwen_stream.engine.vllm.backend import VllmBackend, read_text_config, require_vllm
    from qwen_stream.models import sources

    require_vllm()  # before anything is fetched or converted
    source, tokenizer, defaults, eos_ids = _files(model, progress)
    folder = sources.hf_checkpoint_dir(source, progress=progress)
    trained = sources.context_length(read_text_config(folder))
    if progress:
        print(f"Starting vLLM on {folder} (its own log follows; a minute or more on a CPU) ...", file=sys.stderr,
              flush=True)
    engine = VllmBackend(folder, eos_token_ids=eos_ids, max_model_len=serve_length(context_length, trained),
                         max_running=max_running, max_waiting=max_waiting, prefix_cache=prefix_cache, dtype=dtype,
                         options=options, trust_remote_code=source.legacy_qwen)
    return VllmComponents(name=source.name, tokenizer=tokenizer, engine=engine, default_params=defaults,
                          eos_token_ids=eos_ids)


def _files(model: str | None, progress: bool) -> tuple[ModelSource, Any, SamplingParams, tuple[int, ...]]:
    """What every backend takes from the model's files: its source, tokenizer, sampling defaults and stop ids."""
    from qwen_stream.models import sources

    source = sources.resolve_source(model, progress=progress)
    tokenizer = sources.load_tokenizer(source, progress=progress)
    defaults = SamplingParams(**sources.load_generation_defaults(source))
    return source, tokenizer, defaults, tuple(sources.chat_stop_token_ids(tokenizer))


def _calibration(tokenizer: Any) -> Sequence[int]:
    from qwen_stream.engine.runners.smooth import calibration_token_ids

    return calibration_token_ids(tokenizer)
