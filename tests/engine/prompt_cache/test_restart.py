"""An engine restarted on the same prompt cache directory, on a scripted runner whose slot states are its token ids:
a saved prompt is recalled with no forward, a longer prompt prefills only what is new, and a damaged file or a
state the runner refuses turns into a cold prefill with the same answer. The real llama.cpp runner's turn is
test_llamacpp_restart.py."""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from qwen_stream.engine.loop import Engine, wait_idle
from qwen_stream.engine.prompt_cache.files import entry_name, write_entry
from qwen_stream.engine.prompt_cache.store import PromptStore, open_prompt_store
from qwen_stream.types import SamplingParams, TokenOutput
from tests.support.scripted_runners import RewindingRunner, SavingRunner

GREEDY = SamplingParams(temperature=0.0, max_new_tokens=3, ignore_eos=True)
PROMPT = [(i * 7) % 60 + 1 for i in range(300)]  # next token = last + 1: every answer is known


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "model.gguf"
    path.write_bytes(b"scripted weights" * 1000)
    return path


class Restarts:
    """Engines started one after another on the same directory, each over a fresh runner."""

    def __init__(self, root: Path, weights: Path) -> None:
        self.root, self.weights = root, weights
        self.runner: SavingRunner | None = None
        self.engine: Engine | None = None

    def start(self) -> Engine:
        self.stop()
        self.runner = SavingRunner(str(self.weights))
        store = open_prompt_store(self.root, self.runner)
        store.min_tokens = 64
        self.engine = Engine(self.runner, eos_token_ids=[0], max_running=2, prefill_chunk=128, prompt_cache=store)
        return self.engine

    def ask(self, prompt: list[int]) -> tuple[list[int], int]:
        """The answer's tokens and how many prompt tokens came from a cache (the first output's count)."""
        assert self.engine is not None
        outputs: queue.SimpleQueue[TokenOutput] = queue.SimpleQueue()
        self.engine.submit(prompt, GREEDY, outputs.put)
        got, cached = [], None
        while True:
            out = outputs.get(timeout=10)
            got += out.new_token_ids
            cached = out.num_cached_tokens if cached is None else cached
            if out.finish_reason is not None:
                assert wait_idle(self.engine)
                return got, cached

    def stop(self) -> None:
        if self.engine is not None:
            self.engine.shutdown()  # finishes the queued writes
            self.engine = None

    @property
    def files(self) -> list[Path]:
        return sorted(self.root.glob("*/*.qsp"))


@pytest.fixture
def restarts(tmp_path: Path, weights: Path) -> Iterator[Restarts]:
    r = Restarts(tmp_path / "cache", weights)
    yield r
    r.stop()


def test_after_a_restart_a_saved_prompt_is_recalled_without_a_forward(restarts: Restarts) -> None:
    restarts.start()
    answer, cached = restarts.ask(PROMPT)
    assert cached == 0 and len(restarts.runner.fed) > 0  # type: ignore[union-attr]
    restarts.start()
    assert restarts.files and restarts.ask(PROMPT) == (answer, len(PROMPT))
    runner = restarts.runner
    assert runner is not None and runner.loads == [(runner.loads[0][0], 300, 300)]
    assert all(chunk.start_pos >= len(PROMPT) for chunk in runner.fed)  # decodes only: no prefill at all


def test_a_longer_prompt_sharing_the_prefix_prefills_only_the_rest(restarts: Restarts) -> None:
    restarts.start()
    restarts.ask(PROMPT)
    restarts.start()
    longer = [*PROMPT[:280], 5, 6, 7]
    answer, cached = restarts.ask(longer)
    assert (answer, cached) == ([8, 9, 10], 280)
    runner = restarts.runner
    assert runner is not None and runner.fed[0].start_pos == 280 and runner.fed[0].token_ids == [5, 6, 7]
    restarts.start()  # the longer prompt was saved too (it diverges from the first: both kept)
    assert len(restarts.files) == 2 and restarts.ask(longer) == ([8, 9, 10], len(longer))


@pytest.mark.parametrize("damage", ["flip", "truncate"])
def test_a_damaged_file_gives_a_cold_prefill_and_the_same_answer(restarts: Restarts, damage: str) -> None:
    restarts.start()
    answer, _ = restarts.ask(PROMPT)
    restarts.stop()
    (path,) = restarts.files
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[len(data) // 2] ^= 0x10  # inside the state: found when loading (the header read at start passes)
    else:
        data = data[:-1]  # found when the store opens
    path.write_bytes(bytes(data))
    restarts.start()
    assert restarts.ask(PROMPT) == (answer, 0)
    runner = restarts.runner
    assert runner is not None and runner.loads == [] and runner.fed[0].start_pos == 0
    restarts.start()  # the cold prefill saved the prompt again, whole
    assert restarts.ask(PROMPT) == (answer, len(PROMPT))


def test_a_state_the_runner_refuses_gives_a_cold_prefill(restarts: Restarts) -> None:
    engine = restarts.start()
    store = engine.prompt_cache
    assert store is not None
    # checksummed and named correctly, but its state holds 100 positions where 300 are listed
    write_entry(store.dir / f"{entry_name(PROMPT)}.qsp", store.key, PROMPT, np.zeros(64, np.float32),
                np.asarray(PROMPT[:100], "<i4").tobytes())
    restarts.start()
    answer, cached = restarts.ask(PROMPT)
    assert cached == 0 and answer == [PROMPT[-1] + 1, PROMPT[-1] + 2, PROMPT[-1] + 3]
    runner = restarts.runner
    assert runner is not None and runner.load_tries == 1 and runner.loads == []  # tried, refused, then prefilled
    assert runner.fed[0].start_pos == 0


def test_a_prompt_cache_needs_a_runner_that_saves_and_prefix_caching(tmp_path: Path, weights: Path) -> None:
    store = PromptStore(tmp_path, "k" * 32, max_bytes=1 << 20)
    with pytest.raises(ValueError, match="saves a slot's KV"):
        Engine(RewindingRunner(), eos_token_ids=[0], prompt_cache=store)
    with pytest.raises(ValueError, match="prefix caching"):
        Engine(SavingRunner(str(weights)), eos_token_ids=[0], reuse_prefix=False, prompt_cache=store)
