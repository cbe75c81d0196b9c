"""How the native engine runs a model, as one value: every launch option from ``ChatModel.load`` (or the command
line) down to the runner builder travels as an ``EngineConfig``, not as a score of keyword arguments per layer.

No torch here: the launch options, the model pool and the tests build configs cheaply and compare them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from qwen_stream.engine.spec.drafting import DEFAULT_MAX_DRAFT, DEFAULT_MODEL_DRAFT

RUNNERS = ("auto", "llamacpp", "torch")
# What the prompt cache keeps on disk per model by default (engine/prompt_cache): an entry is its prompt's whole KV
# (f16: ~23 KB a token on SmolLM2-135M, ~28 KB on Qwen2.5-Coder-1.5B, ~57 KB on a 7B), so 4 GiB holds ~60 agent
# prefixes of 2.4k tokens on the 1.5B (~30 on a 7B): every system prompt and tool set a user's agents send, without
# filling a laptop's disk.
DEFAULT_PROMPT_CACHE_GIB = 4.0
# Prompts shorter than this are not saved (engine/prompt_cache): they prefill in well under a second on the models
# served here, and saving every short chat turn would churn the disk and evict the long shared prefixes (an agent's
# system prompt and tools, 2-10k tokens) that the cache is for.
MIN_SAVED_TOKENS = 256
# Cache reuse (engine/sched/cache_reuse.py): cached runs of at least this many tokens move instead of being computed
# again; llama.vim and llama.vscode tell llama-server users to start it with --cache-reuse 256.
DEFAULT_CACHE_REUSE = 256
QUANTIZE_MODES = (None, "int8")
# How prompt chunks are computed on the llama.cpp runner (engine/runners/int8_prefill.py): "auto" builds int8 copies
# of a 1B+ model's layers in the background and takes them where measured cheaper; "int8" builds them at load and
# always takes them; "llamacpp" only llama.cpp's own kernels.
PREFILL_MODES = ("auto", "int8", "llamacpp")


@dataclass(frozen=True, slots=True)
class EngineConfig:
    runner: str = "auto"  # auto: llama.cpp for GGUF on the CPU, PyTorch otherwise (see engine/runners/build.py)
    device: str | None = "cpu"  # None: the CPU; "auto": the first GPU if any (see devices.py)
    dtype: str | None = None  # the PyTorch runner's; None: float32 on CPU, bf16/fp16 on GPU
    max_batch_size: int = 16  # sequences decoded together: the slots of the KV cache
    max_waiting: int = 64  # requests queued beyond the running ones before new ones get EngineOverloadedError
    context_length: int | None = None  # None: the trained window, at most 4096
    threads: int | None = None  # None: one per physical core
    quantize: str | None = None  # "int8": the PyTorch runner with int8 projections
    prefix_cache: bool = True  # a finished request's KV stays in its slot for a later prompt that starts the same
    cache_reuse: int = DEFAULT_CACHE_REUSE  # past the shared prefix, move cached runs this long or longer (0: off)
    speculate: bool = True  # draft tokens by prompt lookup and verify them in the step's one forward
    draft_max: int = DEFAULT_MAX_DRAFT  # most tokens a sequence drafts per step
    kv_budget: int | None = None  # llama.cpp runner: KV cells shared by all slots (None: kv_windows windows)
    kv_windows: int = 1
    kv_type: str | None = None  # llama.cpp runner: "q8_0" for an 8-bit KV cache
    draft_model: str | None = None  # a smaller model of the same tokenizer drafting for speculation (llama.cpp)
    draft_model_max: int = DEFAULT_MODEL_DRAFT  # most tokens it drafts per sequence per step
    pooling: str | None = None  # embeddings: "mean", "cls" or "last" (None: as the model says; models/embedding_style)
    prompt_cache_dir: str | None = None  # llama.cpp runner: long prompts' KV saved here, loaded after a restart
    prompt_cache_size: float = DEFAULT_PROMPT_CACHE_GIB  # GiB the directory keeps per model (least recently used go)
    prefill: str = "auto"  # llama.cpp runner: "auto", "int8" or "llamacpp" (PREFILL_MODES says what each does)

    def __post_init__(self) -> None:
        """ValueError for options no runner accepts, before anything loads."""
        if self.runner not in RUNNERS:
            raise ValueError(f"runner must be one of {', '.join(RUNNERS)}, got {self.runner!r}")
        if self.quantize not in QUANTIZE_MODES:
            raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {self.quantize!r}")
        if self.quantize and self.runner == "llamacpp":
            raise ValueError("quantize applies to the PyTorch runner (llama.cpp runs the GGUF's own quantized "
                             "weights); use --runner torch or auto")
        if self.prefill not in PREFILL_MODES:
            raise ValueError(f"prefill must be one of {', '.join(PREFILL_MODES)}, got {self.prefill!r}")
        if self.prefill == "int8" and (self.runner == "torch" or self.quantize):
            raise ValueError("prefill int8 computes prompts for the llama.cpp runner: it needs runner auto or llamacpp")
        if isinstance(self.cache_reuse, bool) or not isinstance(self.cache_reuse, int) or self.cache_reuse < 0:
            raise ValueError(f"cache_reuse must be an integer >= 0 (0: off), got {self.cache_reuse!r}")
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.context_length is not None and self.context_length < 16:
            raise ValueError(f"context_length must be >= 16, got {self.context_length}")
        if self.pooling not in (None, "mean", "cls", "last"):
            raise ValueError(f"pooling must be mean, cls or last, got {self.pooling!r}")
        if self.prompt_cache_dir == "":
            raise ValueError("prompt_cache_dir must name a directory (None: no prompt cache on disk)")
        if self.prompt_cache_dir is not None and not self.prefix_cache:
            raise ValueError("a prompt cache on disk (prompt_cache_dir) is prefix caching from disk: it needs "
                             "prefix_cache on (drop --no-prefix-cache)")
        if not self.prompt_cache_size > 0:
            raise ValueError(f"prompt_cache_size must be > 0 GiB, got {self.prompt_cache_size}")
        if self.draft_model is not None and (not self.speculate or self.runner == "torch" or self.quantize):
            raise ValueError("a draft model drafts for the native engine's speculation on the llama.cpp runner: it "
                             "needs speculate on and runner auto or llamacpp")

    def with_(self, **changes: Any) -> EngineConfig:
        """A copy with ``changes`` (EngineConfig field names; TypeError for any other)."""
        unknown = set(changes) - {f.name for f in fields(self)}
        if unknown:
            raise TypeError(f"unknown engine option(s): {', '.join(sorted(unknown))}")
        return replace(self, **changes)
