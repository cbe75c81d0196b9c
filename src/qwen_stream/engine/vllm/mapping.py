"""What crosses the vLLM seam, as plain data: engine arguments, sampling fields, outputs. No vllm import here.

The vLLM backend (engine/vllm/backend.py) hands these dicts to vLLM's own classes; keeping the translation pure
lets it be tested where vLLM is not installed, and keeps every field's mapping written once.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from qwen_stream.types import FinishReason, SamplingParams, TokenLogprob, TokenOutput

EXECUTOR_BACKENDS = ("mp", "ray")
# vLLM's finish reasons (CompletionOutput.finish_reason) -> ours; "error" also carries a message.
_FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH, "abort": FinishReason.ABORT,
           "error": FinishReason.ABORT}
# Engine arguments the backend sets itself: a --engine-arg may not silently fight them.
RESERVED_ENGINE_ARGS = frozenset({"model", "skip_tokenizer_init", "max_model_len", "max_num_seqs",
                                  "enable_prefix_caching", "trust_remote_code"})


@dataclass(slots=True, frozen=True)
class VllmOptions:
    """How vLLM spreads the model: the flags `--backend vllm` passes through, and any other engine argument."""

    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    data_parallel_size: int = 1
    distributed_executor_backend: str | None = None  # None: vLLM's choice (mp on one host)
    gpu_memory_utilization: float | None = None
    quantization: str | None = None  # gptq, awq, fp8, ... (vLLM reads most from the checkpoint's config itself)
    engine_args: Mapping[str, Any] = field(default_factory=dict)  # any other AsyncEngineArgs field

    def __post_init__(self) -> None:
        for name in ("tensor_parallel_size", "pipeline_parallel_size", "data_parallel_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.distributed_executor_backend not in (None, *EXECUTOR_BACKENDS):
            raise ValueError(f"distributed_executor_backend must be one of {', '.join(EXECUTOR_BACKENDS)}, "
                             f"got {self.distributed_executor_backend!r}")
        if self.gpu_memory_utilization is not None and not 0.0 < self.gpu_memory_utilization <= 1.0:
            raise ValueError(f"gpu_memory_utilization must be in (0, 1], got {self.gpu_memory_utilization!r}")
        clash = sorted(RESERVED_ENGINE_ARGS & set(self.engine_args))
        if clash:
            raise ValueError(f"engine argument(s) {', '.join(clash)} are set by qwen-stream itself; use its own "
                             "options (--model, --context-length, --max-batch-size, --no-prefix-cache)")


def parse_engine_arg(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key with dashes as underscores, value read as JSON when it parses, else the string)."""
    key, sep, raw = text.partition("=")
    key = key.strip().lstrip("-").replace("-", "_")
    if not sep or not key.isidentifier():
        raise ValueError(f"--engine-arg expects KEY=VALUE (e.g. block_size=32), got {text!r}")
    try:
        value = json.loads(raw)
    except ValueError:
        value = raw  # a bare word: a string such as fp8 or auto
    return key, value


def parse_engine_args(items: Iterable[str] | None) -> dict[str, Any]:
    return dict(parse_engine_arg(item) for item in items or ())


def engine_kwargs(model_dir: str, options: VllmOptions, *, max_model_len: int, max_running: int,
                  prefix_cache: bool, dtype: str, trust_remote_code: bool = False,
                  kv_cache_bytes: int | None = None) -> dict[str, Any]:
    """The AsyncEngineArgs fields for one model. Prompts arrive as token ids and text is made above the seam,
    so vLLM loads no tokenizer (``skip_tokenizer_init``) and ignores the checkpoint's sampling defaults."""
    kwargs: dict[str, Any] = {
        "model": model_dir, "skip_tokenizer_init": True, "generation_config": "vllm", "dtype": dtype,
        "max_model_len": max_model_len, "max_num_seqs": max_running, "enable_prefix_caching": prefix_cache,
        "trust_remote_code": trust_remote_code, "disable_log_stats": True,
        "tensor_parallel_size": options.tensor_parallel_size,
        "pipeline_parallel_size": options.pipeline_parallel_size,
        "data_parallel_size": options.data_parallel_size,
    }
    optional = {"distributed_executor_backend": options.distributed_executor_backend,
                "gpu_memory_utilization": options.gpu_memory_utilization, "quantization": options.quantization,
                "kv_cache_memory_bytes": kv_cache_bytes}
    kwargs.update({k: v for k, v in optional.items() if v is not None})
    kwargs.update(options.engine_args)  # last: the user's explicit word wins over our defaults
    return kwargs


def kv_cache_bytes(config: Mapping[str, Any], *, max_model_len: int, max_running: int, dtype_bytes: int) -> int:
    """KV memory for ``max_running`` full-length sequences (plus block rounding), as the native slot cache sizes
    itself: vLLM's CPU default would take a fixed share of the machine's memory instead."""
    layers = int(config.get("num_hidden_layers") or 0)
    heads = int(config.get("num_attention_heads") or 0)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = int(config.get("head_dim") or (int(config.get("hidden_size") or 0) // max(heads, 1)))
    if not (layers and kv_heads and head_dim):
        raise ValueError("config.json lacks num_hidden_layers / num_attention_heads / hidden_size")
    per_token = 2 * layers * kv_heads * head_dim * dtype_bytes  # K and V
    tokens = max_running * (max_model_len + 128)  # a partly used block per sequence, and some headroom
    return max(per_token * tokens, 64 << 20)


def sampling_kwargs(params: SamplingParams, *, eos_token_ids: Sequence[int], prompt_len: int,
                    max_model_len: int, vocab_size: int) -> dict[str, Any]:
    """vLLM SamplingParams fields for one request. Stop strings are matched above the seam on our own text, so
    vLLM gets only token ids; an end-of-turn token ends the answer unless ``ignore_eos`` (then nothing does,
    as on the native engine). logit_bias ids past the vocabulary are dropped, as our sampler ignores them
    (vLLM would fail the request). ``cache_reuse`` is our engine's speed setting: vLLM computes every token past
    its (exact) prefix cache, which is what a request asking for no reuse gets anyway. ValueError for what vLLM
    cannot do here (a grammar constraint)."""
    if params.constraint is not None:
        # our grammars are matchers over our tokenizer, living in this process; vLLM samples in its own
        raise ValueError("structured output (response_format, json_schema, tool_choice=required) is not "
                         "supported on the vLLM backend; use the native engine")
    stop_ids = [] if params.ignore_eos else list(dict.fromkeys([*eos_token_ids, *params.stop_token_ids]))
    bias = {token_id: value for token_id, value in params.logit_bias if token_id < vocab_size}
    return {
        "n": 1, "max_tokens": max(1, min(params.max_new_tokens, max_model_len - prompt_len)),
        "temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k, "min_p": params.min_p,
        "repetition_penalty": params.repetition_penalty, "presence_penalty": params.presence_penalty,
        "frequency_penalty": params.frequency_penalty, "seed": params.seed, "stop_token_ids": stop_ids,
        "ignore_eos": True,  # vLLM knows no eos without a tokenizer; ours are in stop_token_ids
        "logprobs": params.logprobs, "logit_bias": bias or None, "detokenize": False,
        "skip_special_tokens": params.skip_special_tokens,
    }


def stop_ids_for(params: SamplingParams, eos_token_ids: Sequence[int]) -> frozenset[int]:
    return frozenset() if params.ignore_eos else frozenset((*eos_token_ids, *params.stop_token_ids))


def token_output(request_id: str, completion: Any, *, stop_ids: frozenset[int], logprobs: int | None,
                 num_prompt_tokens: int = 0, num_cached_tokens: int = 0) -> TokenOutput:
    """One vLLM delta (a CompletionOutput with DELTA token ids) as our TokenOutput. The token that ended the
    answer (an end-of-turn or stop id) is dropped, as the native engine never shows it."""
    ids = list(completion.token_ids)
    positions = list(completion.logprobs) if logprobs is not None and completion.logprobs else None
    reason = _FINISH.get(completion.finish_reason) if completion.finish_reason else None
    if reason is FinishReason.STOP and ids and ids[-1] in stop_ids:
        ids = ids[:-1]
        positions = positions[:len(ids)] if positions is not None else None
    error = f"vLLM failed the request ({completion.stop_reason or 'error'})" \
        if completion.finish_reason == "error" else None
    return TokenOutput(request_id, ids, finish_reason=reason, num_prompt_tokens=num_prompt_tokens,
                       logprobs=_logprobs(ids, positions, logprobs), error=error,
                       num_cached_tokens=num_cached_tokens)


def _logprobs(ids: list[int], positions: list[Any] | None, top_n: int | None) -> list[TokenLogprob] | None:
    """vLLM gives, per position, {token_id: Logprob(logprob, rank)} with the sampled token and the top ``n``."""
    if positions is None or top_n is None:
        return None
    out = []
    for token_id, position in zip(ids, positions, strict=False):
        ranked = sorted(position.items(), key=lambda item: item[1].rank or 0)
        top = [(int(t), float(lp.logprob)) for t, lp in ranked if lp.rank is not None and lp.rank <= top_n]
        out.append(TokenLogprob(token_id, float(position[token_id].logprob), top[:top_n]))
    return out
