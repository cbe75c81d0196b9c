"""The model options every command that loads a model shares, and the one way those commands load it.

``qwen-stream chat``, ``serve`` and ``web`` call ``add_model_arguments`` on their parser and ``load_model(args)``
to get a ChatModel. Light imports only: torch and transformers load inside ``load_model``.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING, Any

from qwen_stream.engine.config import (
    DEFAULT_CACHE_REUSE,
    DEFAULT_PROMPT_CACHE_GIB,
    MIN_SAVED_TOKENS,
    PREFILL_MODES,
)
from qwen_stream.engine.spec.drafting import DEFAULT_MAX_DRAFT, DEFAULT_MODEL_DRAFT

SHARED_KV_WINDOWS = 4  # serve and web: KV for four full-length conversations by default, shared by all users

if TYPE_CHECKING:
    from qwen_stream.api import ChatModel
    from qwen_stream.engine.config import EngineConfig


def add_model_arguments(parser: argparse.ArgumentParser, *, several: bool = False) -> None:
    """The model options every command that loads a model shares; ``several``: ``-c`` may repeat (a list)."""
    what = "built-in alias, local HF directory, .gguf file or hub id (default: the default alias)"
    if several:
        parser.add_argument("-c", "--checkpoint-path", "--model", dest="model", action="append", default=None,
                            metavar="[NAME=]MODEL", help=f"{what}; repeat to serve several, each under NAME (default: "
                            "the alias itself or the file's stem), loaded on its first request")
    else:
        parser.add_argument("-c", "--checkpoint-path", "--model", dest="model", default=None, help=what)
    parser.add_argument("--runner", choices=["auto", "llamacpp", "torch"], default="auto",
                        help="what computes the logits: llama.cpp for GGUF, PyTorch otherwise (default: auto); "
                             "the PyTorch runner is our own forward (torch-native) for qwen2/qwen3/llama and the "
                             "transformers forward (torch-hf) otherwise, printed at load")
    parser.add_argument("--cpu-only", action="store_true", help="run on the CPU even if a GPU is present")
    parser.add_argument("--device", default=None, help="torch device: cpu, cuda, cuda:1, auto (default: cpu)")
    parser.add_argument("--dtype", choices=["float32", "bfloat16", "float16"], default=None,
                        help="weights dtype for the PyTorch runner (default: float32 on CPU, bfloat16 on GPU)")
    parser.add_argument("--quantize", choices=["int8"], default=None,
                        help="int8 weights for the PyTorch runner on the CPU (picks --runner torch under auto)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: physical cores)")
    parser.add_argument("--context-length", type=int, default=None, help="context window to serve (tokens)")
    parser.add_argument("--max-batch-size", type=int, default=16, help="sequences decoded together at most")
    parser.add_argument("--speculate", action=argparse.BooleanOptionalAction, default=True,
                        help="speculative decoding: draft tokens from the prompt and the answer so far and check them "
                             "in the step's one forward (the text greedy decoding gives, up to llama.cpp's kernels for "
                             "chunks of 4+ tokens, see docs/speculation.md; faster when the answer repeats the "
                             "prompt, as edits do). Each step drafts only what its measured cost and each answer's acceptance "
                             "say will pay, so free text and full batches draft little or nothing (default: on)")
    parser.add_argument("--draft-max", type=int, default=DEFAULT_MAX_DRAFT,
                        help=f"most tokens a sequence drafts per step (default: {DEFAULT_MAX_DRAFT})")
    parser.add_argument("--draft-model", default=None, metavar="MODEL",
                        help="speculate with a smaller model of the same tokenizer too (an alias such as "
                             "qwen2.5-coder-0.5b or a .gguf file; llama.cpp runner only): it drafts where lookup "
                             "finds nothing, as on free text, when its measured cost pays; one stream gains, a full "
                             "batch drafts nothing (default: none)")
    parser.add_argument("--draft-model-max", type=int, default=DEFAULT_MODEL_DRAFT,
                        help=f"most tokens the draft model drafts per sequence and step (default: "
                             f"{DEFAULT_MODEL_DRAFT})")
    parser.add_argument("--kv-budget", type=int, default=None,
                        help="llama.cpp runner: KV cache size in tokens, shared by all slots and filled as requests "
                             f"need it (like llama-server's -c; default: one context window, serve and web: "
                             f"{SHARED_KV_WINDOWS})")
    parser.add_argument("--kv-type", choices=["f16", "q8_0"], default=None,
                        help="llama.cpp runner: KV cache precision; q8_0 takes half the memory (default: f16)")
    parser.add_argument("--pooling", choices=["mean", "cls", "last"], default=None,
                        help="how embeddings pool the model's hidden states (default: as the model says: an embedding "
                             "model's own; a chat model's last token)")
    parser.add_argument("--no-prefix-cache", dest="prefix_cache", action="store_false",
                        help="forget a finished request's KV (default: keep it, so the next turn of a conversation "
                             "prefills only its new tokens)")
    parser.add_argument("--prompt-cache-dir", default=None, metavar="DIR",
                        help=f"llama.cpp runner: save the KV of long prompts ({MIN_SAVED_TOKENS}+ tokens: an agent's "
                             "system prompt and tools) in DIR, keyed by model, so that after a restart a prompt "
                             "starting the same way loads it instead of prefilling it (default: off)")
    parser.add_argument("--prompt-cache-size", type=float, default=DEFAULT_PROMPT_CACHE_GIB, metavar="GIB",
                        help=f"most the prompt cache keeps on disk per model, least recently used prompts deleted "
                             f"first (default: {DEFAULT_PROMPT_CACHE_GIB:g} GiB)")
    parser.add_argument("--cache-reuse", type=_non_negative, default=DEFAULT_CACHE_REUSE, metavar="N",
                        help="past the prefix a prompt shares with a slot's cache, move cached runs of N+ tokens that "
                             "come next in it (the text after an editor's cursor) instead of computing them again, as "
                             "llama-server's --cache-reuse; close to, not bit for bit, a cold run; never for a request "
                             "with a seed of its own; llama.cpp runner (default: %(default)s; 0: off)")
    parser.add_argument("--prefill", choices=PREFILL_MODES, default="auto",
                        help="how the llama.cpp runner computes prompts: int8 computes long prompt chunks with int8 "
                             "GEMMs (PyTorch, a second ~1.3 GB copy of a 1.5B model's layers built at load; close to, "
                             "not bit for bit, llama.cpp; never for a request with a seed of its own), llamacpp only "
                             "llama.cpp's kernels, auto builds the int8 copy in the background for 1B+ models and "
                             "takes it where measured faster (default: %(default)s)")
    _add_backend_arguments(parser)


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _add_backend_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=["native", "vllm"], default="native",
                        help="the engine: ours (native, default) or vLLM's, for many GPUs and hosts (needs the vllm "
                             "package: run from .venv-vllm, see README)")
    group = parser.add_argument_group("vLLM backend (--backend vllm)")
    group.add_argument("--tensor-parallel-size", type=int, default=None, metavar="N",
                       help="split every layer over N GPUs (default 1)")
    group.add_argument("--pipeline-parallel-size", type=int, default=None, metavar="N",
                       help="split the layers into N stages, e.g. one per host (default 1)")
    group.add_argument("--data-parallel-size", type=int, default=None, metavar="N",
                       help="N engine replicas sharing the requests (default 1)")
    group.add_argument("--distributed-executor-backend", choices=["mp", "ray"], default=None,
                       help="how vLLM starts its workers: mp on one host, ray across hosts (scripts/ray_cluster.sh)")
    group.add_argument("--gpu-memory-utilization", type=float, default=None, metavar="F",
                       help="share of each GPU's memory vLLM may use for weights and KV (default: vLLM's, 0.9)")
    group.add_argument("--quantization", default=None, metavar="METHOD",
                       help="vLLM's weight quantization (awq, gptq, fp8, ...; default: what the checkpoint says)")
    group.add_argument("--engine-arg", action="append", default=None, metavar="KEY=VALUE",
                       help="any other vLLM engine argument, repeatable, VALUE read as JSON when it parses "
                            "(e.g. --engine-arg enforce_eager=true --engine-arg block_size=32)")


_VLLM_FLAGS = ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size", "distributed_executor_backend",
               "gpu_memory_utilization", "quantization", "engine_arg")


def backend_options(args: argparse.Namespace) -> dict[str, Any]:
    """ChatModel.load keywords for the chosen backend; a vLLM flag without --backend vllm is an error."""
    given = [name for name in _VLLM_FLAGS if getattr(args, name, None) is not None]
    backend = getattr(args, "backend", "native")
    if backend != "vllm":
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise ValueError(f"{flags}: options of the vLLM engine; add --backend vllm")
        return {}
    from qwen_stream.engine.vllm.mapping import VllmOptions, parse_engine_args

    sizes = {name: getattr(args, name) or 1
             for name in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size")}
    options = VllmOptions(**sizes, distributed_executor_backend=args.distributed_executor_backend,
                          gpu_memory_utilization=args.gpu_memory_utilization, quantization=args.quantization,
                          engine_args=parse_engine_args(args.engine_arg))
    return {"backend": "vllm", "vllm_options": options}


def device_from_args(args: argparse.Namespace) -> str | None:
    """The device asked for (None: the default, resolved by devices.py); --cpu-only wins."""
    if getattr(args, "cpu_only", False):
        return "cpu"
    return args.device


def engine_config(args: argparse.Namespace, **changes: Any) -> EngineConfig:
    """The EngineConfig the shared options say (``changes``: a command's own defaults, e.g. serve's KV windows)."""
    from qwen_stream.engine.config import EngineConfig

    return EngineConfig(runner=args.runner, device=device_from_args(args), dtype=args.dtype, threads=args.threads,
                        quantize=args.quantize, prefix_cache=args.prefix_cache,
                        cache_reuse=getattr(args, "cache_reuse", DEFAULT_CACHE_REUSE), context_length=args.context_length,
                        max_batch_size=args.max_batch_size, speculate=args.speculate, draft_max=args.draft_max,
                        kv_budget=args.kv_budget, kv_type=args.kv_type, draft_model=args.draft_model,
                        draft_model_max=args.draft_model_max, pooling=getattr(args, "pooling", None),
                        prompt_cache_dir=getattr(args, "prompt_cache_dir", None),
                        prefill=getattr(args, "prefill", "auto"),
                        prompt_cache_size=getattr(args, "prompt_cache_size", DEFAULT_PROMPT_CACHE_GIB)).with_(**changes)


def load_model(args: argparse.Namespace, *, progress: bool = True, tool_parser: str | None = None,
               **changes: Any) -> ChatModel:
    """Load the model the shared options name, saying so on stderr; ``changes``: EngineConfig fields a command sets;
    ``tool_parser``: how the model writes tool calls (None: read from its chat template)."""
    from qwen_stream.api import ChatModel  # heavy: torch, transformers

    print(f"Loading {args.model or 'the default model'} ...", file=sys.stderr, flush=True)
    backend = backend_options(args)  # checked before the slow part
    model = ChatModel.load(args.model, engine_config(args, **changes), progress=progress, tool_parser=tool_parser,
                           **backend)
    print(f"Loaded {model.name} on {model.engine.name} ({model.context_length}-token context, "
          f"{model.engine.max_running} slots)", file=sys.stderr, flush=True)
    return model
