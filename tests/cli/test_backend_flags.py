"""`--backend vllm` and the vLLM scale flags, as every model-loading command parses them (no vLLM needed)."""

from __future__ import annotations

import pytest

from qwen_stream.cli.main import build_parser, main
from qwen_stream.cli.model_args import backend_options
from qwen_stream.engine.vllm.backend import vllm_available
from qwen_stream.engine.vllm.mapping import VllmOptions


@pytest.mark.parametrize("command", ["chat", "serve", "web"])
def test_every_command_takes_the_backend_and_scale_flags(command: str) -> None:
    args = build_parser().parse_args([command, "--backend", "vllm", "--tensor-parallel-size", "4",
                                      "--pipeline-parallel-size", "2", "--data-parallel-size", "2",
                                      "--distributed-executor-backend", "ray", "--gpu-memory-utilization", "0.8",
                                      "--quantization", "awq", "--engine-arg", "enforce_eager=true",
                                      "--engine-arg", "max-num-batched-tokens=4096"])
    assert backend_options(args) == {"backend": "vllm", "vllm_options": VllmOptions(
        tensor_parallel_size=4, pipeline_parallel_size=2, data_parallel_size=2, distributed_executor_backend="ray",
        gpu_memory_utilization=0.8, quantization="awq",
        engine_args={"enforce_eager": True, "max_num_batched_tokens": 4096})}
    assert backend_options(build_parser().parse_args([command])) == {}  # native: nothing extra


def test_a_vllm_flag_without_the_vllm_backend_is_an_error() -> None:
    with pytest.raises(ValueError, match="add --backend vllm"):
        backend_options(build_parser().parse_args(["serve", "--tensor-parallel-size", "2"]))
    with pytest.raises(ValueError, match="KEY=VALUE"):
        backend_options(build_parser().parse_args(["serve", "--backend", "vllm", "--engine-arg", "oops"]))


def test_native_kv_options_are_refused_on_the_vllm_backend() -> None:
    from qwen_stream.api import ChatModel

    with pytest.raises(ValueError, match="kv_cache_memory_bytes"):
        ChatModel.load("unused", backend="vllm", kv_budget=4096)
    with pytest.raises(ValueError, match="prompt-cache-dir"):
        ChatModel.load("unused", backend="vllm", prompt_cache_dir="/tmp/prompts")
    with pytest.raises(ValueError, match="--prefill"):
        ChatModel.load("unused", backend="vllm", prefill="int8")


@pytest.mark.skipif(vllm_available(), reason="checks the message shown where vllm is not installed")
def test_serve_without_vllm_installed_says_how_to_get_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--backend", "vllm", "-c", "smollm2-135m"]) == 2
    assert "scripts/install.sh" in capsys.readouterr().err
