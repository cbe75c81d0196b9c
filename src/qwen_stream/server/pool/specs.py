"""What ``serve -c A -c NAME=B --models-dir DIR`` names: the models a server may load, each under a name.

A model's name is what requests give as ``model``: ``NAME`` when written ``NAME=SOURCE``, else a built-in alias
itself, a file's stem (``qwen.gguf`` -> ``qwen``), a directory's name, or a hub id's last part. ``--models-dir``
adds every ``.gguf`` in a directory (a split model once, by its first part, named without the part suffix).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

_SPLIT_PART = re.compile(r"-(\d{5})-of-(\d{5})$")  # llama.cpp's split GGUF: name-00001-of-00003.gguf


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    source: str | None  # what ChatModel.load takes: alias, .gguf path, HF directory or hub id (None: default)


def parse_model_specs(values: Sequence[str] | None, models_dir: str | None = None) -> list[ModelSpec]:
    """The models, in the order given (the first is the default); raises ValueError for a repeated name."""
    specs = [_spec(value) for value in values or []]
    if models_dir is not None:
        specs += _directory_specs(Path(models_dir))
    if not specs:
        specs = [ModelSpec(_default_name(), None)]
    seen: dict[str, str | None] = {}
    for spec in specs:
        if spec.name in seen:
            raise ValueError(f"two models are named {spec.name!r} ({seen[spec.name]} and {spec.source}): "
                             "name one with -c NAME=PATH")
        seen[spec.name] = spec.source
    return specs


def _spec(value: str) -> ModelSpec:
    name, sep, source = value.partition("=")
    if sep and name and "/" not in name and not Path(value).exists():
        if not source:
            raise ValueError(f"-c {value}: nothing after '='")
        return ModelSpec(name, source)
    return ModelSpec(model_name_of(value), value)


def model_name_of(source: str) -> str:
    from qwen_stream.models.registry import is_alias

    if is_alias(source):
        return source.strip().lower()
    path = Path(source)
    stem = path.stem if path.suffix == ".gguf" else path.name
    return _SPLIT_PART.sub("", stem) or source


def _directory_specs(directory: Path) -> list[ModelSpec]:
    if not directory.is_dir():
        raise ValueError(f"--models-dir {directory}: not a directory")
    files = sorted(p for p in directory.glob("*.gguf") if _is_first_part(p))
    if not files:
        raise ValueError(f"--models-dir {directory}: no .gguf files in it")
    return [ModelSpec(model_name_of(str(p)), str(p)) for p in files]


def _is_first_part(path: Path) -> bool:
    match = _SPLIT_PART.search(path.stem)
    return match is None or int(match.group(1)) == 1


def _default_name() -> str:
    from qwen_stream.models.registry import default_model

    return model_name_of(default_model())


def source_size(source: str | None) -> int:
    """Bytes of the model's files on disk (0 where unknown): what ``/api/ps`` and ``/api/tags`` report as size."""
    from qwen_stream.models.registry import alias_cache_path, default_model, get_alias, is_alias

    source = source or default_model()
    path = alias_cache_path(get_alias(source)) if is_alias(source) else Path(source)
    try:
        if path.is_file():
            return path.stat().st_size
        if path.is_dir():
            return sum(p.stat().st_size for p in path.iterdir()
                       if p.suffix in (".gguf", ".safetensors", ".bin") and p.is_file())
    except OSError:
        return 0
    return 0
