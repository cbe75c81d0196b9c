"""Fixtures shared by the engine tests (the real SmolLM2 GGUF is tests/conftest.py's gguf_path): one ChatModel per engine
backend (the contract tests run on each): ours over the session's tiny checkpoint and tokenizer, vLLM over the same
model with 32-wide heads, and the scripted backend the server tests stand on (tests/support/scripted_backend.py), held to the
same contract.

The vLLM parameter needs the vllm package (in .venv-vllm, see scripts/install_vllm.sh) and is skipped cleanly
without it; scripts/test.sh runs the vLLM tests in that venv.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qwen_stream.engine.vllm.backend import vllm_available
from qwen_stream.types import SamplingParams
from tests.support.scripted_backend import scripted_model

needs_vllm = pytest.mark.skipif(not vllm_available(), reason="vllm is not installed (it lives in .venv-vllm)")
BACKENDS = ["native", "scripted", pytest.param("vllm", marks=[pytest.mark.vllm, needs_vllm])]
MAX_BATCH = 4
MAX_WAITING = 4


@pytest.fixture(scope="session")
def tiny_model_dir_hd32(tmp_path_factory: pytest.TempPathFactory, qwen_tokenizer: Any) -> Path:
    """The tiny random qwen2 with 32-wide attention heads: vLLM's CPU attention has no 16-wide kernel."""
    from qwen_stream.models.tiny import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-qwen2-hd32"), qwen_tokenizer, hidden_size=64,
                               num_heads=2, num_kv_heads=1)


def native_model(model_dir: Path, tokenizer: Any) -> Any:
    """Our Engine (prompt-lookup speculation on, as ChatModel.load has it) over the PyTorch runner of the tiny
    checkpoint, with the session's tokenizer: the backend under test, without reading the tokenizer from disk again
    (ChatModel.load's own path is tests/client/test_load_model.py's and the session model's)."""
    from qwen_stream.client.loaded_model import LoadedModel
    from qwen_stream.engine.loop import Engine
    from qwen_stream.engine.runners.torch_native import build_torch_runner
    from qwen_stream.engine.spec.drafting import SpeculationConfig
    from qwen_stream.models import sources

    source = sources.resolve_source(str(model_dir))
    runner = build_torch_runner(sources.load_hf_model(source), max_slots=MAX_BATCH, max_seq_len=512)
    eos = sources.chat_stop_token_ids(tokenizer)
    engine = Engine(runner, eos_token_ids=eos, max_running=MAX_BATCH, max_waiting=MAX_WAITING,
                    speculate=SpeculationConfig())
    defaults = SamplingParams(**sources.load_generation_defaults(source))
    return LoadedModel.assemble(name=source.name, tokenizer=tokenizer, engine=engine, default_params=defaults,
                                eos_token_ids=eos)


@pytest.fixture(scope="session", params=BACKENDS)
def backend_model(request: pytest.FixtureRequest, qwen_tokenizer: Any) -> Iterator[Any]:
    """A ChatModel on each backend (pytest groups the tests by parameter, so vLLM starts once)."""
    from qwen_stream.api import ChatModel

    if request.param == "scripted":  # paced, so a stream of 400 tokens is still running when a test acts on it
        model = ChatModel(scripted_model(qwen_tokenizer, max_model_len=512, max_running=MAX_BATCH,
                                         max_waiting=MAX_WAITING, step_s=0.005))
    elif request.param == "native":
        model = ChatModel(native_model(request.getfixturevalue("tiny_model_dir"), qwen_tokenizer))
    else:  # vLLM runs the model itself, and its CPU attention has no kernel for the 16-wide heads
        model = ChatModel.load(str(request.getfixturevalue("tiny_model_dir_hd32")), backend="vllm",
                               context_length=512, max_batch_size=MAX_BATCH, max_waiting=MAX_WAITING, progress=False)
    try:
        yield model
    finally:
        model.close()
