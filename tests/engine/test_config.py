"""EngineConfig: the one value launch options travel in; bad options fail when it is made, before any load."""

from __future__ import annotations

import argparse

import pytest

from qwen_stream.cli.model_args import add_model_arguments, engine_config
from qwen_stream.engine.config import EngineConfig


@pytest.mark.parametrize(("changes", "message"), [
    ({"runner": "onnx"}, "runner must be one of"),
    ({"quantize": "int4"}, "quantize must be one of"),
    ({"quantize": "int8", "runner": "llamacpp"}, "quantize applies to the PyTorch runner"),
    ({"max_batch_size": 0}, "max_batch_size must be >= 1"),
    ({"context_length": 8}, "context_length must be >= 16"),
    ({"prompt_cache_dir": "/tmp/p", "prefix_cache": False}, "needs prefix_cache on"),
    ({"prompt_cache_size": 0}, "prompt_cache_size must be > 0"),
])
def test_bad_options_fail_when_the_config_is_made(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EngineConfig().with_(**changes)


def test_with_refuses_unknown_names_and_keeps_the_rest() -> None:
    config = EngineConfig(max_batch_size=4)
    with pytest.raises(TypeError, match="unknown engine option"):
        config.with_(max_batchsize=8)
    changed = config.with_(kv_type="q8_0")
    assert (changed.max_batch_size, changed.kv_type, config.kv_type) == (4, "q8_0", None)


def test_command_line_options_become_one_config() -> None:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    args = parser.parse_args(["--runner", "torch", "--max-batch-size", "3", "--no-speculate", "--cpu-only",
                              "--kv-type", "q8_0", "--no-prefix-cache"])
    config = engine_config(args, kv_windows=4)
    assert config == EngineConfig(runner="torch", device="cpu", max_batch_size=3, speculate=False, kv_type="q8_0",
                                  prefix_cache=False, kv_windows=4)


@pytest.mark.parametrize("command", ["chat", "serve"])
def test_the_prompt_cache_flags_reach_the_config(command: str) -> None:
    from qwen_stream.cli.main import build_parser

    args = build_parser().parse_args([command, "--prompt-cache-dir", "/tmp/prompts", "--prompt-cache-size", "0.5"])
    config = engine_config(args)
    assert (config.prompt_cache_dir, config.prompt_cache_size) == ("/tmp/prompts", 0.5)
    assert engine_config(build_parser().parse_args([command])).prompt_cache_dir is None


@pytest.mark.parametrize(("changes", "message"), [
    ({"prefill": "bf16"}, "prefill must be one of"),
    ({"prefill": "int8", "runner": "torch"}, "prefill int8 computes prompts for the llama.cpp runner"),
    ({"prefill": "int8", "quantize": "int8"}, "prefill int8 computes prompts for the llama.cpp runner"),
])
def test_bad_prefill_options_fail_when_the_config_is_made(changes: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        EngineConfig().with_(**changes)


@pytest.mark.parametrize("command", ["chat", "serve", "web"])
def test_the_prefill_flag_reaches_the_config(command: str) -> None:
    from qwen_stream.cli.main import build_parser

    assert engine_config(build_parser().parse_args([command, "--prefill", "int8"])).prefill == "int8"
    assert engine_config(build_parser().parse_args([command])).prefill == "auto"


def test_auto_builds_the_int8_copy_for_big_models_with_the_memory_to_build_it() -> None:
    from qwen_stream.engine.runners.prefill_setup import auto_skip_reason

    assert "fast enough" in (auto_skip_reason(135_000_000, 20 * 10**9) or "")  # SmolLM2
    assert "GB free" in (auto_skip_reason(1_780_000_000, 8 * 10**9) or "")  # the 1.5B on a busy 16 GB laptop
    assert auto_skip_reason(1_780_000_000, 16 * 10**9) is None
    assert auto_skip_reason(1_780_000_000, None) is None  # no /proc/meminfo to read: build
    assert auto_skip_reason(1_780_000_000, 8 * 10**9, saved=True) is None  # loading a saved copy takes far less
