"""How the bench's systems sample: plain greedy (the default, every published figure) or Qwen's own defaults.

One place for the settings each system gets, so a run compares like with like:

- ours (in process and `qwen-stream serve`): temperature, top_k, top_p and the HF repetition penalty, which covers
  the whole prompt + output;
- llama-server: the same values, its repetition window (``repeat_last_n``, default 64 tokens) widened to the slot's
  whole context (it feeds the prompt into its sampler too, so this is prompt + output, as ours), ``min_p`` 0 (its
  default is 0.05; ours is off) and its samplers in HF's order (temperature before top-p: its default applies top-p
  to the distribution at temperature 1).

A request's seed comes from its messages, so every system sees the same seed for the same prompt.
"""

from __future__ import annotations

import zlib
from typing import Any

GREEDY: dict[str, Any] = {"temperature": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0,
                          "frequency_penalty": 0.0}
QWEN: dict[str, Any] = {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05,
                        "presence_penalty": 0.0, "frequency_penalty": 0.0}
SAMPLINGS = {"greedy": GREEDY, "qwen": QWEN}


def request_seed(messages: list[dict[str, str]]) -> int:
    return zlib.crc32("\x00".join(m["content"] for m in messages).encode())


def ours(name: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    """Keyword arguments for ChatModel.stream (and the body fields of our server, which takes the same names)."""
    settings = dict(SAMPLINGS[name])
    if name != "greedy":
        settings["seed"] = request_seed(messages)
    return settings


def llama_server(name: str, messages: list[dict[str, str]], context_length: int) -> dict[str, Any]:
    """Body fields for llama-server's /v1/chat/completions with the same sampling."""
    settings = ours(name, messages)
    settings["repeat_penalty"] = settings.pop("repetition_penalty")
    if name == "greedy":
        return settings
    return {**settings, "repeat_last_n": context_length, "min_p": 0.0,
            "samplers": ["penalties", "top_k", "temperature", "top_p"]}
