"""A loaded model as every front end uses it: its input processor and its engine client, the pair under the Python
API, the terminal, the web page and each model of the server; and how a model's name becomes one.

``models/`` finds and reads the files; ``engine/`` builds the runner or backend that computes on them; this module
puts them together (tokenizer, sampling defaults, stop ids, engine), so that neither has to import the other's job.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from qwen_stream.client.engine_client import EngineClient
from qwen_stream.engine.backend import EngineBackend, backend_tasks
from qwen_stream.engine.config import EngineConfig
from qwen_stream.engine.runners.base import ModelRunner
from qwen_stream.heap import release_free_heap
from qwen_stream.inputs.processor import InputProcessor
from qwen_stream.models.embedding_style import EmbeddingStyle
from qwen_stream.output.token_strings import TokenStrings
from qwen_stream.types import SamplingParams

if TYPE_CHECKING:
    from qwen_stream.engine.prompt_cache.store import PromptStore
    from qwen_stream.engine.spec.draft_model import ModelDrafter
    from qwen_stream.engine.vllm.backend import VllmBackend
    from qwen_stream.engine.vllm.mapping import VllmOptions
    from qwen_stream.models.sources import ModelSource

logger = logging.getLogger(__name__)

BACKENDS = ("native", "vllm")  # our step-loop engine, or vLLM's (engine/vllm/backend.py)


@dataclass(eq=False)
class LoadedModel:
    """The pair: ``inputs`` turns requests into engine requests, ``client`` runs them and reads the answers."""

    inputs: InputProcessor
    client: EngineClient
    strings: TokenStrings = field(init=False)  # token texts for logprobs, cached per model

    def __post_init__(self) -> None:
        self.strings = TokenStrings(self.inputs.tokenizer)

    @classmethod
    def assemble(cls, *, name: str, tokenizer: Any, engine: EngineBackend, default_params: SamplingParams,
                 eos_token_ids: Sequence[int] = (), default_system: str | None = None,
                 tool_parser: str | None = None, embedding: EmbeddingStyle | None = None) -> LoadedModel:
        """The pair over a started engine (any ``EngineBackend``); ``embedding``: how the model embeds (read from
        its files: models/embedding_style.py), what the engine can do read from the engine itself."""
        inputs = InputProcessor(tokenizer, name=name, context_length=engine.max_model_len,
                                vocab_size=engine.vocab_size, default_params=default_params,
                                eos_token_ids=eos_token_ids, default_system=default_system, tool_parser=tool_parser,
                                embedding=embedding, tasks=backend_tasks(engine),
                                embedding_width=getattr(engine, "embedding_width", None))
        return cls(inputs, EngineClient(engine, tokenizer))

    @property
    def name(self) -> str:
        return self.inputs.name

    @property
    def engine(self) -> EngineBackend:
        return self.client.engine

    @property
    def context_length(self) -> int:
        return self.inputs.context_length

    def close(self) -> None:
        self.client.close()


class HasLoaded(Protocol):
    """A front end's wrapper of a loaded model (``ChatModel``): what the server and others unwrap."""

    loaded: LoadedModel


def as_loaded(model: LoadedModel | HasLoaded) -> LoadedModel:
    """The pair itself, from the pair or a wrapper of it (a ``ChatModel``)."""
    return model if isinstance(model, LoadedModel) else model.loaded


def load_model(model: str | None = None, config: EngineConfig | None = None, *, backend: str = "native",
               vllm_options: VllmOptions | None = None, system: str | None = None, tool_parser: str | None = None,
               progress: bool = True) -> LoadedModel:
    """Load a built-in alias, a local HF directory, a .gguf file or a hub id and start its engine as ``config``
    says: ours over a runner, or vLLM's (``backend="vllm"``, options in ``vllm_options``)."""
    from qwen_stream.engine.loop import Engine
    from qwen_stream.engine.spec.drafting import SpeculationConfig

    config = config or EngineConfig()
    _check_backend(backend, config, vllm_options)
    if backend == "vllm":
        vllm = load_vllm_components(model, options=vllm_options, dtype=config.dtype,
                                    max_running=config.max_batch_size, max_waiting=config.max_waiting,
                                    context_length=config.context_length, prefix_cache=config.prefix_cache,
                                    progress=progress)
        return LoadedModel.assemble(name=vllm.name, tokenizer=vllm.tokenizer, engine=vllm.engine,
                                    default_params=vllm.default_params, eos_token_ids=vllm.eos_token_ids,
                                    default_system=system, tool_parser=tool_parser)
    parts = load_components(model, config, progress=progress)
    speculation = (SpeculationConfig(max_draft=config.draft_max, model_max_draft=config.draft_model_max)
                   if config.speculate else None)
    engine = Engine(parts.runner, eos_token_ids=parts.eos_token_ids, max_running=config.max_batch_size,
                    max_waiting=config.max_waiting, max_model_len=parts.context_length,
                    reuse_prefix=config.prefix_cache, speculate=speculation, drafter=parts.drafter,
                    prompt_cache=parts.prompt_cache, cache_reuse=config.cache_reuse)
    logger.info("%s runs on %s (context %d tokens, %d slots)", parts.name, engine.name, engine.max_model_len,
                engine.max_running)
    return LoadedModel.assemble(name=parts.name, tokenizer=parts.tokenizer, engine=engine,
                                default_params=parts.default_params, eos_token_ids=parts.eos_token_ids,
                                default_system=system, tool_parser=tool_parser, embedding=parts.embedding)


def _check_backend(backend: str, config: EngineConfig, vllm_options: VllmOptions | None) -> None:
    """Options of one backend asked of the other: refused before anything loads."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "native":
        if vllm_options is not None:
            raise ValueError("vllm_options apply to backend='vllm'")
        return
    if config.draft_model is not None:
        raise ValueError("a draft model drafts for the native engine's speculation on the llama.cpp runner: it "
                         "needs backend native")
    if config.runner != "auto":
        raise ValueError("--runner chooses what runs under the native engine; with backend vllm, vLLM runs the "
                         "model itself")
    if config.quantize is not None:
        raise ValueError("--quantize int8 is the native PyTorch runner's; vLLM takes --quantization "
                         "(gptq, awq, fp8, ...)")
    if config.kv_budget is not None or config.kv_type is not None:
        raise ValueError("--kv-budget and --kv-type size the native engine's KV pool; vLLM sizes its own "
                         "(--engine-arg kv_cache_memory_bytes=..., --engine-arg kv_cache_dtype=fp8)")
    if config.prompt_cache_dir is not None:
        raise ValueError("--prompt-cache-dir saves the native engine's llama.cpp KV; vLLM keeps its own prefix "
                         "cache (in memory)")
    if config.prefill != "auto":
        raise ValueError("--prefill chooses how the native engine's llama.cpp runner computes prompts; vLLM runs "
                         "its own kernels")


@dataclass(slots=True)
class ModelComponents:
    name: str
    tokenizer: Any
    runner: ModelRunner
    default_params: SamplingParams
    eos_token_ids: tuple[int, ...]
    context_length: int
    drafter: ModelDrafter | None = None  # a draft model for speculation (draft_model.py), if one was asked for
    prompt_cache: PromptStore | None = None  # long prompts' KV on disk (engine/prompt_cache), if a dir was given
    embedding: EmbeddingStyle | None = None  # how it embeds, as its files say (None: a chat model's default)


def load_components(model: str | None, config: EngineConfig | None = None, *,
                    progress: bool = True) -> ModelComponents:
    """Load ``model`` (alias, HF directory, .gguf file or hub id) and build its runner as ``config`` says (see
    engine/runners/build.py)."""
    from qwen_stream.devices import configure_threads, resolve_device
    from qwen_stream.engine.prompt_cache.store import open_prompt_store
    from qwen_stream.engine.runners.build import build_runner

    config = config or EngineConfig()
    resolve_device(config.device)  # an unavailable device fails before anything is downloaded or loaded
    threads = configure_threads(config.threads)
    source, tokenizer, defaults, eos_ids = _files(model, progress)
    built = build_runner(source, config, threads=threads, progress=progress,
                         calibration=_calibration(tokenizer) if config.quantize else None)
    try:
        store = (open_prompt_store(config.prompt_cache_dir, built, size_gib=config.prompt_cache_size)
                 if config.prompt_cache_dir else None)  # a runner that cannot save its KV fails here, not later
        drafter = _drafter(config.draft_model, built, threads, progress) if config.draft_model else None
    except BaseException:
        built.close()
        raise
    release_free_heap()  # what loading freed (the tokenizer's parsed JSON, say) leaves our RSS: see heap.py
    return ModelComponents(name=source.name, tokenizer=tokenizer, runner=built, default_params=defaults,
                           eos_token_ids=eos_ids, context_length=built.max_seq_len, drafter=drafter,
                           embedding=_embedding_style(source, built, config.pooling), prompt_cache=store)


def _embedding_style(source: ModelSource, runner: ModelRunner, pooling: str | None) -> EmbeddingStyle:
    """How the model embeds: as a sentence-transformers folder or an embedding GGUF declares, else a chat model's
    default (last token, normalised); ``pooling`` (``--pooling``) overrides the pooling either way."""
    from dataclasses import replace

    from qwen_stream.models.embedding_style import gguf_style, read_folder_style

    if source.kind == "hf_dir":
        style = read_folder_style(source.path)
    else:
        style = gguf_style(getattr(runner, "default_pooling", None), getattr(runner, "architecture", None))
    style = style or EmbeddingStyle()
    return replace(style, pooling=pooling) if pooling else style


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
