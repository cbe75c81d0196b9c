"""Loading models: the tiny random model's folder round trip, legacy Qwen folders, and the real SmolLM2 GGUF."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from qwen_stream.cpu import physical_cores
from qwen_stream.devices import configure_threads
from qwen_stream.inputs.chat_template import ChatPrompter, make_messages
from qwen_stream.models import gguf_convert, registry, sources
from qwen_stream.models.qwen_tokenizer import default_tiktoken_file
from qwen_stream.models.tiny import make_tiny_model_dir

PROMPT = "请给我讲一个有趣的故事 🤖 hello"


def test_tiny_model_dir_round_trip(tiny_model_dir: Path, qwen_tokenizer: Any) -> None:
    source = sources.resolve_source(str(tiny_model_dir))
    assert (source.kind, source.path, source.alias, source.legacy_qwen) == ("hf_dir", tiny_model_dir, None, False)
    tokenizer = sources.load_tokenizer(source)
    assert tokenizer(PROMPT)["input_ids"] == qwen_tokenizer(PROMPT)["input_ids"]
    assert tokenizer.chat_template == qwen_tokenizer.chat_template
    model = sources.load_hf_model(source)
    assert not model.training and model.dtype == torch.float32
    assert model.config.model_type == "qwen2" and model.config.vocab_size >= len(qwen_tokenizer)
    assert sources.context_length(model.config) == 4096
    assert sources.chat_stop_token_ids(tokenizer) == (151645, 151643)  # eos <|im_end|>, then <|endoftext|>
    assert sources.load_generation_defaults(source) == {
        "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05, "max_new_tokens": 512}


def test_tiny_model_logits_are_peaked_enough_for_greedy(tiny_model_dir: Path, qwen_tokenizer: Any) -> None:
    model = sources.load_hf_model(sources.resolve_source(str(tiny_model_dir)))
    ids = torch.tensor([qwen_tokenizer(PROMPT)["input_ids"]])
    with torch.no_grad():
        logits = model(ids).logits[0]  # [seq, vocab]
    top2 = logits.topk(2, dim=-1).values
    assert (top2[:, 0] - top2[:, 1]).min() > 1e-3  # the argmax is decided by weights, not float noise
    assert logits.std() > 2.0


def test_bfloat16_load(tiny_model_dir: Path) -> None:
    model = sources.load_hf_model(sources.resolve_source(str(tiny_model_dir)), dtype="bfloat16")
    assert model.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="dtype must be"):
        sources.load_hf_model(sources.resolve_source(str(tiny_model_dir)), dtype="int3")


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_other_tiny_architectures(tmp_path: Path, qwen_tokenizer: Any, arch: str) -> None:
    folder = make_tiny_model_dir(tmp_path, qwen_tokenizer, arch=arch, seed=1)
    model = sources.load_hf_model(sources.resolve_source(str(folder)))
    assert model.config.model_type == arch
    assert model.config.num_hidden_layers == 2 and model.config.num_key_value_heads == 2
    with torch.no_grad():
        assert model(torch.tensor([[1, 2, 3]])).logits.shape == (1, 3, model.config.vocab_size)


def test_tiny_model_rejects_unknown_arch(tmp_path: Path, qwen_tokenizer: Any) -> None:
    with pytest.raises(ValueError, match="arch must be one of"):
        make_tiny_model_dir(tmp_path, qwen_tokenizer, arch="gpt2")


def test_legacy_qwen_folder_uses_the_tiktoken_tokenizer(tmp_path: Path, qwen_tokenizer: Any) -> None:
    # Qwen-7B-Chat's files: config.json with model_type "qwen" (remote code), qwen.tiktoken, generation_config
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen", "seq_length": 8192,
                                                      "auto_map": {"AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel"}}))
    (tmp_path / "generation_config.json").write_text(json.dumps({
        "chat_format": "chatml", "eos_token_id": 151643, "max_new_tokens": 512, "do_sample": True, "top_k": 0,
        "top_p": 0.8, "repetition_penalty": 1.1}))
    os.symlink(default_tiktoken_file(), tmp_path / "qwen.tiktoken")
    source = sources.resolve_source(str(tmp_path / "config.json"))
    assert source.kind == "hf_dir" and source.legacy_qwen
    tokenizer = sources.load_tokenizer(source)
    assert tokenizer(PROMPT)["input_ids"] == qwen_tokenizer(PROMPT)["input_ids"]
    assert sources.load_generation_defaults(source) == {
        "top_p": 0.8, "top_k": 0, "repetition_penalty": 1.1, "max_new_tokens": 512}
    assert sources.context_length(json.loads((tmp_path / "config.json").read_text())) == 8192


def test_greedy_generation_config_means_temperature_zero(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "qwen2"}))
    (tmp_path / "generation_config.json").write_text(json.dumps({"do_sample": False, "top_p": 0, "top_k": 5}))
    assert sources.load_generation_defaults(sources.resolve_source(str(tmp_path))) == {"temperature": 0.0, "top_k": 5}


def test_configure_threads() -> None:
    before = torch.get_num_threads()
    try:
        assert configure_threads(1) == 1 and torch.get_num_threads() == 1
        assert configure_threads(None) == physical_cores() >= 1
    finally:
        torch.set_num_threads(before)
    with pytest.raises(ValueError, match="threads"):
        configure_threads(0)


def _greedy(model: Any, ids: list[int], steps: int) -> list[int]:
    """Plain greedy decoding with full forwards: slow but independent of any engine or generate()."""
    tokens = list(ids)
    with torch.no_grad():
        for _ in range(steps):
            tokens.append(int(model(torch.tensor([tokens])).logits[0, -1].argmax()))
    return tokens[len(ids):]


@pytest.mark.slow
def test_smollm2_gguf_converts_once_then_loads_from_the_cache() -> None:
    source = sources.resolve_source("smollm2-135m", progress=False)
    tokenizer = sources.load_tokenizer(source, progress=False)
    model = sources.load_hf_model(source, progress=False)
    folder = gguf_convert.converted_dir(source.path, registry.cache_root(), source.sha256)
    assert gguf_convert.is_complete(folder / "model") and gguf_convert.is_complete(folder / "tokenizer")
    assert model.config.model_type == "llama" and sources.chat_stop_token_ids(tokenizer) == (2, 0)
    # not a Qwen model: plain nucleus sampling, no Qwen repetition penalty
    assert sources.load_generation_defaults(source) == sources.PLAIN_GENERATION_DEFAULTS

    prompt = ChatPrompter(tokenizer).build(make_messages("What is the capital of France?"), max_prompt_tokens=512)
    assert "Paris" in tokenizer.decode(_greedy(model, prompt.ids, 12))

    marker = folder / "model" / "qwen_stream_converted.json"
    converted_at = marker.stat().st_mtime_ns
    started = time.perf_counter()
    again_tokenizer = sources.load_tokenizer(source, progress=False)
    sources.load_hf_model(source, dtype=torch.bfloat16, progress=False)
    assert time.perf_counter() - started < 30  # seconds from the cache, not a second conversion
    assert marker.stat().st_mtime_ns == converted_at
    assert again_tokenizer(PROMPT)["input_ids"] == tokenizer(PROMPT)["input_ids"]


def test_a_gguf_path_resolves_to_a_path_keyed_cache() -> None:
    alias_path = registry.ensure_alias("smollm2-135m", progress=False)
    source = sources.resolve_source(str(alias_path))
    assert (source.kind, source.alias, source.sha256, source.name) == (
        "gguf", None, None, "SmolLM2-135M-Instruct.Q4_1")
    by_path = gguf_convert.converted_dir(source.path, registry.cache_root())
    by_sha = gguf_convert.converted_dir(source.path, registry.cache_root(), registry.ALIASES["smollm2-135m"].sha256)
    assert by_path != by_sha and by_path.parent == by_sha.parent
    assert sources.resolve_source(str(alias_path.parent)).path == source.path  # a folder with one .gguf


def test_a_hub_id_in_the_local_hf_cache_loads_offline(tiny_model_dir: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # the layout huggingface_hub writes: hub/models--owner--name/{refs/main, snapshots/<commit>/...}
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "hf" / "hub" / "models--tiny-org--tiny-qwen2"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny_model_dir, repo / "snapshots" / commit)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import huggingface_hub.constants as hub_constants

    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))  # read once at import
    source = sources.resolve_source("tiny-org/tiny-qwen2")
    assert (source.kind, source.name, source.path) == ("hf_dir", "tiny-org/tiny-qwen2", repo / "snapshots" / commit)
    assert sources.load_hf_model(source).config.model_type == "qwen2"


MIXED_TEXTS = [PROMPT, "def f(x):\n    return x  # it's, they're\n\n\n  ", "<|im_start|>user\nhi<|im_end|>\n",
               " leading space,   runs\t\ttabs", "naïve café 😀😀 ありがとう 안녕하세요", ""]


@pytest.mark.slow
def test_qwen_gguf_tokenizer_is_the_lean_fast_one_with_the_same_ids() -> None:
    # The default model's tokenizer loads as the generic fast tokenizer over its tokenizer.json, not as
    # transformers' Qwen2Tokenizer, which keeps Python copies of the vocabulary and merges (~60 MB of RSS).
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if not any(a.present for a in registry.alias_status() if a.name == "qwen2.5-coder-1.5b"):
        pytest.skip("the qwen2.5-coder-1.5b GGUF is not in the cache (1.1 GB)")
    source = sources.resolve_source("qwen2.5-coder-1.5b", progress=False)
    lean = sources.load_tokenizer(source, progress=False)
    named = AutoTokenizer.from_pretrained(str(sources.hf_tokenizer_dir(source, progress=False)))
    assert type(lean) is PreTrainedTokenizerFast and not hasattr(lean, "_merges")
    assert type(named).__name__ == "Qwen2Tokenizer"
    for text in MIXED_TEXTS:
        assert lean(text)["input_ids"] == named(text)["input_ids"], text
        assert lean.decode(named(text)["input_ids"]) == text
    messages = make_messages("hi", [("Who are you?", "Qwen.")])
    assert ChatPrompter(lean).build(messages, max_prompt_tokens=512) == \
        ChatPrompter(named).build(messages, max_prompt_tokens=512)
    assert sources.chat_stop_token_ids(lean) == sources.chat_stop_token_ids(named) == (151645, 151643)
    assert len(lean) == len(named) and lean.all_special_ids == named.all_special_ids
    assert lean.get_added_vocab() == named.get_added_vocab()


def test_a_prompt_cache_dir_on_a_runner_that_cannot_save_its_kv_fails_at_load(tiny_model_dir: Path,
                                                                               tmp_path: Path) -> None:
    from qwen_stream.client.loaded_model import load_model
    from qwen_stream.engine.config import EngineConfig

    config = EngineConfig(runner="torch", prompt_cache_dir=str(tmp_path / "prompts"), max_batch_size=1,
                          context_length=64)
    with pytest.raises(ValueError, match=r"llama\.cpp runner"):
        load_model(str(tiny_model_dir), config, progress=False)


def test_the_int8_prefill_on_a_model_that_runs_on_pytorch_fails_at_load(tiny_model_dir: Path) -> None:
    from qwen_stream.client.loaded_model import load_model
    from qwen_stream.engine.config import EngineConfig

    # a Hugging Face checkpoint runs on PyTorch under runner auto: nothing would take the int8 prefill's K/V
    with pytest.raises(ValueError, match=r"--prefill int8 .* this model runs on PyTorch"):
        load_model(str(tiny_model_dir), EngineConfig(prefill="int8", max_batch_size=1, context_length=64),
                   progress=False)
