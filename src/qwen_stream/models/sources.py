"""Find a model from what the user typed, and load its tokenizer, weights and sampling defaults.

Accepted: a built-in alias, a local Hugging Face folder (including Qwen-7B-Chat's legacy remote-code format),
a ``.gguf`` file, or a hub id (from the local HF cache, or the hub when it is reachable; never a hang).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from qwen_stream.models import gguf_convert, registry

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

HUB_PROBE_TIMEOUT_S = 3.0
# Qwen2.5's recommended sampling (its generation_config.json): what a GGUF, which carries none, gets.
QWEN_GENERATION_DEFAULTS: dict[str, Any] = {
    "temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05, "max_new_tokens": 512,
}
# Other GGUF models carry no sampling advice; a repetition penalty tuned for Qwen garbles small models
# (SmolLM2 said "I'sure" with it), so they get plain nucleus sampling.
PLAIN_GENERATION_DEFAULTS: dict[str, Any] = {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 512}
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_HUB_PATTERNS = ["*.json", "*.safetensors", "*.py", "*.tiktoken", "*.model", "*.txt", "*.jinja"]


class ModelNotFoundError(FileNotFoundError):
    """The model is neither a built-in alias, a local file or folder, nor fetchable from the hub."""


@dataclass(frozen=True, slots=True)
class ModelSource:
    kind: Literal["gguf", "hf_dir"]
    path: Path  # the .gguf file, or the folder holding config.json
    name: str  # for display: alias, hub id or file/folder name
    alias: str | None = None
    legacy_qwen: bool = False  # Qwen-7B-Chat's format: model_type "qwen", remote code, qwen.tiktoken
    sha256: str | None = None  # known for aliases: keys the conversion cache without hashing 1 GB


def resolve_source(name_or_path: str | os.PathLike[str] | None, *, progress: bool = True) -> ModelSource:
    """Turn an alias, path or hub id (None: $QWEN_STREAM_MODEL or the default alias) into a ModelSource."""
    if name_or_path is None:
        name_or_path = registry.default_model()
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise TypeError(f"model must be a name or a path, got {type(name_or_path).__name__}")
    text = os.fspath(name_or_path).strip()
    if not text:
        raise ValueError("model name is empty")
    if registry.is_alias(text):
        alias = registry.get_alias(text)
        path = registry.ensure_alias(alias.name, progress=progress)
        if alias.archive_folder is not None:  # a Hugging Face folder (the embedding model)
            return _hf_dir_source(path, alias.name, alias=alias.name)
        return ModelSource("gguf", path, alias.name, alias=alias.name, sha256=alias.sha256)
    path = Path(text).expanduser()
    if path.exists():
        return _local_source(path)
    if _looks_like_path(text):
        raise FileNotFoundError(f"model path {text!r} does not exist")
    return _hub_source(text, progress=progress)


def _looks_like_path(text: str) -> bool:
    return (text.startswith(("/", "./", "../", "~", "\\")) or text.lower().endswith(".gguf")
            or bool(re.match(r"^[A-Za-z]:[\\/]", text)) or text.count("/") > 1 or "\\" in text)


def _local_source(path: Path) -> ModelSource:
    if path.is_file():
        if path.suffix.lower() == ".gguf":
            return ModelSource("gguf", path.resolve(), path.stem)
        if path.name == "config.json":
            return _local_source(path.parent)
        raise ValueError(f"{path} is neither a .gguf file nor a model folder with config.json")
    if (path / "config.json").is_file():
        return _hf_dir_source(path.resolve(), path.resolve().name)
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) == 1:
        return ModelSource("gguf", ggufs[0].resolve(), ggufs[0].stem)
    raise ValueError(f"{path} has no config.json (not a Hugging Face model folder)"
                     + (f" and several .gguf files: pass one of {[g.name for g in ggufs]}" if ggufs else ""))


def _hf_dir_source(path: Path, name: str, *, alias: str | None = None) -> ModelSource:
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ValueError(f"{path / 'config.json'} is not valid JSON: {exc}") from exc
    legacy = isinstance(config, dict) and config.get("model_type") == "qwen"
    return ModelSource("hf_dir", path, name, alias=alias, legacy_qwen=legacy)


def _hub_source(repo_id: str, *, progress: bool) -> ModelSource:
    cached = _hf_cache_snapshot(repo_id)
    if cached is not None:
        return _hf_dir_source(cached, repo_id)
    endpoint = _hub_endpoint()
    why = _hub_unavailable_reason(endpoint)
    if why is None and _HUB_ID.match(repo_id):
        try:
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(repo_id, allow_patterns=_HUB_PATTERNS, etag_timeout=10))
            return _hf_dir_source(folder, repo_id)
        except Exception as exc:  # any hub failure (404, auth, network) ends the same way for the user
            why = f"{type(exc).__name__}: {exc}"
    if why is None:
        why = "it is not a hub id of the form owner/name"
    raise ModelNotFoundError(_not_found_message(repo_id, why))


def _not_found_message(name: str, why: str) -> str:
    aliases = registry.list_aliases()
    close = difflib.get_close_matches(name.lower(), [a.name for a in aliases], n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    listing = ", ".join(f"{a.name} ({a.size_text})" for a in aliases)
    return (f"could not find or fetch model {name!r}: no such local file or folder, not in the local Hugging Face "
            f"cache, and it could not be fetched ({why}).{hint} Built-in aliases that work offline: {listing}; "
            f"or pass a local model folder or a .gguf file.")


def _hf_cache_snapshot(repo_id: str) -> Path | None:
    if not _HUB_ID.match(repo_id):
        return None
    try:
        from huggingface_hub import snapshot_download

        folder = Path(snapshot_download(repo_id, local_files_only=True, allow_patterns=_HUB_PATTERNS))
    except Exception:  # not cached (LocalEntryNotFoundError and friends)
        return None
    return folder if (folder / "config.json").is_file() else None


def _hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def _hub_unavailable_reason(endpoint: str) -> str | None:
    """None if the hub answers within a few seconds; else why not. Never blocks longer than the probe."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}:
        return "HF_HUB_OFFLINE is set"
    result: list[str | None] = []

    def probe() -> None:
        import urllib.error
        import urllib.request

        try:
            urllib.request.urlopen(urllib.request.Request(endpoint, method="HEAD"), timeout=HUB_PROBE_TIMEOUT_S)
            result.append(None)
        except urllib.error.HTTPError:
            result.append(None)  # it answered, even if with an error status: the hub is reachable
        except Exception as exc:
            result.append(f"the model hub at {endpoint} is unreachable: {exc}")

    # DNS lookups ignore urllib's timeout, so the probe runs in a daemon thread we stop waiting for.
    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(HUB_PROBE_TIMEOUT_S + 0.5)
    if not result:
        return f"the model hub at {endpoint} did not answer within {HUB_PROBE_TIMEOUT_S:.0f} s"
    return result[0]


# ---------------------------------------------------------------------------------------------- loading


def load_tokenizer(source: ModelSource, *, progress: bool = True) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    if source.kind == "gguf":
        # The generic fast tokenizer over the tokenizer.json we saved, not the class its config names: transformers
        # 5's Qwen2Tokenizer rebuilds the BPE from Python copies of the vocabulary and merges and keeps both alive
        # (Qwen's 151k entries: ~60 MB more RSS for the same token ids; test_loader checks they are the same).
        return PreTrainedTokenizerFast.from_pretrained(str(hf_tokenizer_dir(source, progress=progress)))
    if source.legacy_qwen:
        tiktoken_file = source.path / "qwen.tiktoken"
        if tiktoken_file.is_file():
            from qwen_stream.models.qwen_tokenizer import build_qwen_tokenizer

            return build_qwen_tokenizer(tiktoken_file)
        return AutoTokenizer.from_pretrained(str(source.path), trust_remote_code=True)
    return AutoTokenizer.from_pretrained(str(source.path))


def load_hf_model(source: ModelSource, *, dtype: torch.dtype | str = "float32", device: str = "cpu",
                  progress: bool = True) -> PreTrainedModel:
    """The model in eval mode on ``device`` (resolved as everywhere: see devices.py)."""
    import torch
    from transformers import AutoModelForCausalLM

    from qwen_stream.devices import resolve_device, resolve_dtype

    folder = hf_checkpoint_dir(source, progress=progress)
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype, torch.device("cpu"))}
    if source.legacy_qwen:
        kwargs["trust_remote_code"] = True  # Qwen-7B-Chat's modeling code ships with its checkpoint
    model = AutoModelForCausalLM.from_pretrained(str(folder), **kwargs)
    model = model.to(resolve_device(device))  # type: ignore[arg-type]  # transformers' stub wraps .to oddly
    return model.eval()


def load_hf_encoder(source: ModelSource, *, device: str = "cpu") -> PreTrainedModel:
    """A text encoder (BERT and kin) as transformers' AutoModel, float32, in eval mode on ``device``."""
    import torch
    from transformers import AutoModel

    from qwen_stream.devices import resolve_device

    model = AutoModel.from_pretrained(str(source.path), dtype=torch.float32)
    return model.to(resolve_device(device)).eval()  # type: ignore[arg-type]


def hf_checkpoint_dir(source: ModelSource, *, progress: bool = True) -> Path:
    """A folder with config.json and the weights: the source's own, or a GGUF converted once and cached."""
    if source.kind == "gguf":
        return gguf_convert.ensure_checkpoint(source.path, _conversion_dir(source), progress=progress)
    return source.path


def hf_tokenizer_dir(source: ModelSource, *, progress: bool = True) -> Path:
    """A folder a Hugging Face tokenizer loads from (for peers that tokenize themselves, e.g. `vllm serve`)."""
    if source.kind == "gguf":
        return gguf_convert.ensure_tokenizer(source.path, _conversion_dir(source), progress=progress)
    return source.path


def _conversion_dir(source: ModelSource) -> Path:
    return gguf_convert.converted_dir(source.path, registry.cache_root(), source.sha256)


def load_generation_defaults(source: ModelSource) -> dict[str, Any]:
    """Sampling defaults (SamplingParams field names) from generation_config.json; Qwen2.5's for a GGUF."""
    if source.kind == "gguf":
        is_qwen = "qwen" in f"{source.name} {source.path.name}".lower()
        return dict(QWEN_GENERATION_DEFAULTS if is_qwen else PLAIN_GENERATION_DEFAULTS)
    try:
        raw = json.loads((source.path / "generation_config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return _sampling_from_generation_config(raw if isinstance(raw, dict) else {})


def _sampling_from_generation_config(raw: dict[str, Any]) -> dict[str, Any]:
    checks: dict[str, Any] = {
        "temperature": lambda v: v >= 0, "top_p": lambda v: 0 < v <= 1, "top_k": lambda v: v >= 0,
        "repetition_penalty": lambda v: v > 0, "max_new_tokens": lambda v: v >= 1,
    }
    out: dict[str, Any] = {}
    for key, ok in checks.items():
        value = raw.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool) and ok(value):
            out[key] = int(value) if key in ("top_k", "max_new_tokens") else float(value)
    if raw.get("do_sample") is False:
        out["temperature"] = 0.0  # the model's authors asked for greedy decoding
    return out


def chat_stop_token_ids(tokenizer: Any, extra: Any = ()) -> tuple[int, ...]:
    """Token ids that end a chat answer: eos, plus <|im_end|> and <|endoftext|> when the vocab has them."""
    ids: list[int] = []
    eos = getattr(tokenizer, "eos_token_id", None)
    candidates = list(eos) if isinstance(eos, (list, tuple)) else [eos]
    for token in ("<|im_end|>", "<|endoftext|>"):
        token_id = tokenizer.convert_tokens_to_ids(token)
        # an unknown token maps to None or to the unk id: round-trip to be sure it is really this token
        if isinstance(token_id, int) and tokenizer.convert_ids_to_tokens(token_id) == token:
            candidates.append(token_id)
    candidates += list(extra)
    for token_id in candidates:
        if isinstance(token_id, int) and token_id >= 0 and token_id not in ids:
            ids.append(token_id)
    return tuple(ids)


def context_length(config: Any) -> int:
    """The model's trained context window, from whichever field its config uses."""
    def get(key: str) -> Any:
        return config.get(key) if isinstance(config, dict) else getattr(config, key, None)

    for key in ("max_position_embeddings", "seq_length", "n_positions", "max_sequence_length", "n_ctx"):
        value = get(key)
        if isinstance(value, int) and value > 0:
            return value
    return 2048  # what most older configs without such a field were trained with
