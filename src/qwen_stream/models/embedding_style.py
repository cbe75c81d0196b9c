"""How a model turns text into one vector: pooling, normalisation, the prompts its queries and documents get.

Read from the files as their authors wrote them: a sentence-transformers folder says it in ``modules.json``,
``1_Pooling/config.json`` (mean, CLS or last token), a ``Normalize`` module, ``config_sentence_transformers.json``
(prompts by input type; Qwen3-Embedding's query prompt is ``"Instruct: <task>\\nQuery:"``) and
``sentence_bert_config.json`` (the longest input); an embedding GGUF declares ``<arch>.pooling_type`` (read by the
llama.cpp runner). A model that declares nothing (a chat model) embeds by its last token, normalised, no prompts.
Plain data and file reading; no torch.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# Qwen3-Embedding's default task for queries (its model card and sentence-transformers config); documents get none.
QWEN3_QUERY_TASK = "Given a web search query, retrieve relevant passages that answer the query"
QWEN3_QUERY_PROMPT = f"Instruct: {QWEN3_QUERY_TASK}\nQuery:"
INPUT_TYPES = ("query", "document")


@dataclass(frozen=True, slots=True)
class EmbeddingStyle:
    pooling: str = "last"  # "mean", "cls" or "last" (engine/pooling.py)
    normalize: bool = True
    prompts: Mapping[str, str] = field(default_factory=dict)  # input type ("query", "document") -> text prefix
    append_eos: bool = False  # every input ends with the eos token (Qwen3-Embedding's GGUF, whose tokenizer lacks it)
    max_tokens: int | None = None  # the longest input the model was built for (sentence-transformers' max_seq_length)
    declared: bool = False  # the model says it is an embedding model (not a chat model's default)

    def prompt(self, input_type: str | None) -> str:
        """The prefix of an input of this type ("" for none, or a type the model has no prompt for)."""
        return self.prompts.get(input_type, "") if input_type else ""


def read_folder_style(folder: Path) -> EmbeddingStyle | None:
    """A sentence-transformers folder's style; None for a folder that is not one (no modules.json)."""
    modules = _json(folder / "modules.json")
    if not isinstance(modules, list):
        return None
    types = [str(m.get("type", "")) for m in modules if isinstance(m, dict)]
    pooling_dir = next((str(m.get("path", "")) for m in modules
                        if isinstance(m, dict) and str(m.get("type", "")).endswith(".Pooling")), None)
    pooling = _pooling_mode(_json(folder / pooling_dir / "config.json") if pooling_dir else None)
    config = _json(folder / "config_sentence_transformers.json")
    prompts = config.get("prompts") if isinstance(config, dict) else None
    bert = _json(folder / "sentence_bert_config.json")
    max_tokens = bert.get("max_seq_length") if isinstance(bert, dict) else None
    return EmbeddingStyle(
        pooling=pooling, normalize=any(t.endswith(".Normalize") for t in types),
        prompts={k: str(v) for k, v in prompts.items() if isinstance(k, str)} if isinstance(prompts, dict) else {},
        max_tokens=max_tokens if isinstance(max_tokens, int) and max_tokens > 0 else None, declared=True)


def gguf_style(pooling: str | None, architecture: str | None) -> EmbeddingStyle | None:
    """The style of a GGUF that declares a pooling (an embedding GGUF); Qwen3's is Qwen3-Embedding: last token,
    its query prompt, the eos token ending every input."""
    if pooling is None:
        return None
    if architecture == "qwen3" and pooling == "last":
        return EmbeddingStyle(pooling="last", prompts={"query": QWEN3_QUERY_PROMPT, "document": ""},
                              append_eos=True, declared=True)
    return EmbeddingStyle(pooling=pooling, declared=True)


def _pooling_mode(config: Any) -> str:
    """The one pooling a folder asks for; ValueError for one we cannot honour (max, mean-sqrt-len, several)."""
    if not isinstance(config, dict):
        return "mean"  # sentence-transformers' own default
    modes = [mode for key, mode in (("pooling_mode_lasttoken", "last"), ("pooling_mode_cls_token", "cls"),
                                    ("pooling_mode_mean_tokens", "mean"), ("pooling_mode_max_tokens", "max"),
                                    ("pooling_mode_mean_sqrt_len_tokens", "mean_sqrt_len"),
                                    ("pooling_mode_weightedmean_tokens", "weighted_mean")) if config.get(key)]
    if len(modes) > 1 or (modes and modes[0] not in ("last", "cls", "mean")):
        raise ValueError(f"this embedding model pools by {' + '.join(modes)}: only mean, CLS or last-token "
                         "pooling is supported")
    return modes[0] if modes else "mean"


def _json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
