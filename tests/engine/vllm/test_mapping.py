"""The vLLM seam as plain data: engine arguments, sampling fields and outputs (no vLLM needed; the backend tests
in tests/engine/vllm/ run the same mapping through the real vLLM)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from qwen_stream.engine.vllm.backend import cpu_binding
from qwen_stream.engine.vllm.mapping import (
    VllmOptions,
    engine_kwargs,
    kv_cache_bytes,
    parse_engine_args,
    sampling_kwargs,
    stop_ids_for,
    token_output,
)
from qwen_stream.types import FinishReason, SamplingParams

EOS = (151645, 151643)


def test_engine_args_are_parsed_as_json_or_strings() -> None:
    assert parse_engine_args(["block-size=32", "enforce_eager=true", "kv_cache_dtype=fp8",
                              "--max-num-batched-tokens=4096", 'hf_overrides={"a": 1}']) == {
        "block_size": 32, "enforce_eager": True, "kv_cache_dtype": "fp8", "max_num_batched_tokens": 4096,
        "hf_overrides": {"a": 1}}
    for bad in ("no_equals", "=3", "two words=1"):
        with pytest.raises(ValueError, match="KEY=VALUE"):
            parse_engine_args([bad])


def test_options_are_validated_and_reserved_args_refused() -> None:
    with pytest.raises(ValueError, match="tensor_parallel_size"):
        VllmOptions(tensor_parallel_size=0)
    with pytest.raises(ValueError, match="mp, ray"):
        VllmOptions(distributed_executor_backend="slurm")
    with pytest.raises(ValueError, match="gpu_memory_utilization"):
        VllmOptions(gpu_memory_utilization=1.5)
    with pytest.raises(ValueError, match="max_model_len"):
        VllmOptions(engine_args={"max_model_len": 9})


def test_engine_kwargs_pass_scale_flags_and_let_the_user_win() -> None:
    options = VllmOptions(tensor_parallel_size=4, pipeline_parallel_size=2, distributed_executor_backend="ray",
                          gpu_memory_utilization=0.8, quantization="awq",
                          engine_args={"enforce_eager": True, "dtype": "float16"})
    kwargs = engine_kwargs("/m", options, max_model_len=2048, max_running=8, prefix_cache=False, dtype="bfloat16",
                           kv_cache_bytes=None)
    assert kwargs["model"] == "/m" and kwargs["skip_tokenizer_init"] and kwargs["generation_config"] == "vllm"
    assert (kwargs["tensor_parallel_size"], kwargs["pipeline_parallel_size"], kwargs["data_parallel_size"]) == (4, 2, 1)
    assert kwargs["distributed_executor_backend"] == "ray" and kwargs["quantization"] == "awq"
    assert kwargs["gpu_memory_utilization"] == 0.8 and "kv_cache_memory_bytes" not in kwargs
    assert (kwargs["max_model_len"], kwargs["max_num_seqs"], kwargs["enable_prefix_caching"]) == (2048, 8, False)
    assert kwargs["dtype"] == "float16" and kwargs["enforce_eager"] is True  # --engine-arg wins over defaults


def test_kv_cache_is_sized_to_the_work() -> None:
    config = {"num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3, "hidden_size": 576}
    per_token = 2 * 30 * 3 * 64 * 4  # K and V, 30 layers, 3 KV heads of 64, float32
    assert kv_cache_bytes(config, max_model_len=1024, max_running=16, dtype_bytes=4) == per_token * 16 * (1024 + 128)
    assert kv_cache_bytes(config, max_model_len=16, max_running=1, dtype_bytes=2) == 64 << 20  # a floor
    with pytest.raises(ValueError, match=r"config\.json"):
        kv_cache_bytes({}, max_model_len=16, max_running=1, dtype_bytes=2)


def test_every_sampling_field_is_mapped() -> None:
    params = SamplingParams(max_new_tokens=100, temperature=0.3, top_p=0.9, top_k=20, min_p=0.05,
                            repetition_penalty=1.1, presence_penalty=0.5, frequency_penalty=-0.5, seed=7,
                            stop=["\n\n"], stop_token_ids=[42], logprobs=3, skip_special_tokens=False,
                            logit_bias={5: 2.0, 10**6: -100.0})
    kwargs = sampling_kwargs(params, eos_token_ids=EOS, prompt_len=1000, max_model_len=1050, vocab_size=1000)
    assert kwargs == {
        "n": 1, "max_tokens": 50,  # what still fits the window
        "temperature": 0.3, "top_p": 0.9, "top_k": 20, "min_p": 0.05, "repetition_penalty": 1.1,
        "presence_penalty": 0.5, "frequency_penalty": -0.5, "seed": 7, "stop_token_ids": [*EOS, 42],
        "ignore_eos": True, "logprobs": 3, "logit_bias": {5: 2.0}, "detokenize": False,
        "skip_special_tokens": False}
    # every field of ours reaches vLLM, or is handled above the seam (stop strings) / by ignore_eos
    # constraint: refused, see below; pooling (embeddings, scores): refused at submit (engine/pooling.check_task);
    # cache_reuse: vLLM computes every token past its exact prefix cache (the answer no reuse gives);
    # seed_drawn: how our own scheduler treats cached KV for the seed (vLLM keeps its own prefix cache)
    handled_apart = {"stop", "max_new_tokens", "ignore_eos", "constraint", "pooling", "cache_reuse", "seed_drawn"}
    assert set(SamplingParams.__dataclass_fields__) - handled_apart <= set(kwargs)


def test_a_grammar_constraint_is_refused_with_a_clear_error() -> None:
    class Grammar:
        def new_matcher(self) -> Any:
            raise NotImplementedError

    with pytest.raises(ValueError, match="not supported on the vLLM backend"):
        sampling_kwargs(SamplingParams(constraint=Grammar()), eos_token_ids=EOS, prompt_len=1, max_model_len=64,
                        vocab_size=100)


def test_ignore_eos_means_no_stop_token_at_all() -> None:
    params = SamplingParams(ignore_eos=True, stop_token_ids=[42])
    assert sampling_kwargs(params, eos_token_ids=EOS, prompt_len=1, max_model_len=64,
                           vocab_size=100)["stop_token_ids"] == []
    assert stop_ids_for(params, EOS) == frozenset()
    assert stop_ids_for(SamplingParams(stop_token_ids=[42]), EOS) == frozenset({*EOS, 42})


@dataclass
class _Logprob:  # the shape of vllm.logprobs.Logprob
    logprob: float
    rank: int | None
    decoded_token: str | None = None


@dataclass
class _Completion:  # the shape of vllm.outputs.CompletionOutput (the real one is used in tests/engine/vllm/)
    token_ids: list[int]
    finish_reason: str | None = None
    stop_reason: Any = None
    logprobs: list[dict[int, _Logprob]] | None = None
    index: int = 0
    text: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def test_outputs_map_to_token_outputs_and_the_stop_token_is_not_shown() -> None:
    out = token_output("r", _Completion([7, 8]), stop_ids=frozenset(EOS), logprobs=None, num_prompt_tokens=5,
                       num_cached_tokens=2)
    assert (out.new_token_ids, out.finish_reason, out.num_prompt_tokens, out.num_cached_tokens) == ([7, 8], None, 5, 2)
    end = token_output("r", _Completion([9, EOS[0]], "stop", EOS[0]), stop_ids=frozenset(EOS), logprobs=None)
    assert (end.new_token_ids, end.finish_reason) == ([9], FinishReason.STOP)
    assert token_output("r", _Completion([3], "length"), stop_ids=frozenset(EOS), logprobs=None).finish_reason \
        is FinishReason.LENGTH
    aborted = token_output("r", _Completion([], "abort"), stop_ids=frozenset(EOS), logprobs=None)
    assert aborted.finish_reason is FinishReason.ABORT and aborted.error is None
    failed = token_output("r", _Completion([], "error"), stop_ids=frozenset(EOS), logprobs=None)
    assert failed.finish_reason is FinishReason.ABORT and failed.error


def test_logprobs_keep_the_chosen_token_and_the_best_n() -> None:
    positions = [{4: _Logprob(-2.0, 3), 1: _Logprob(-0.5, 1), 2: _Logprob(-1.0, 2)},  # chosen token ranked 3rd
                 {1: _Logprob(-0.1, 1), 6: _Logprob(-3.0, 2)}]
    out = token_output("r", _Completion([4, 1], logprobs=positions), stop_ids=frozenset(), logprobs=2)
    assert out.logprobs is not None
    assert [(lp.token_id, lp.logprob, lp.top) for lp in out.logprobs] == [
        (4, -2.0, [(1, -0.5), (2, -1.0)]), (1, -0.1, [(1, -0.1), (6, -3.0)])]


def test_cpu_binding_gives_each_worker_its_cores() -> None:
    assert cpu_binding([0, 1], 2) == "0|1"
    assert cpu_binding([0, 1, 2, 3, 4], 2) == "0,1|2,3"
    with pytest.raises(ValueError, match="at least 4 cores"):
        cpu_binding([0, 1], 4)
