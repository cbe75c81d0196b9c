"""Process-wide llama.cpp set-up for the llama.cpp runner: the backend's one-time start, its C logs (quiet unless
verbose, errors always), and what an embedding GGUF says about its pooling. Used by the llama.cpp runner only.
"""

from __future__ import annotations

import ctypes
import sys
from types import ModuleType
from typing import Any

_backend_ready = False

_GGUF_POOLINGS = {1: "mean", 2: "cls", 3: "last"}  # enum llama_pooling_type: NONE 0, MEAN 1, CLS 2, LAST 3


def gguf_pooling(ll: ModuleType, model: Any) -> tuple[str | None, str | None]:
    """The GGUF's architecture and the pooling an embedding GGUF declares (``<arch>.pooling_type``; None for a model
    that declares none)."""
    buf = ctypes.create_string_buffer(128)
    if ll.llama_model_meta_val_str(model, b"general.architecture", buf, len(buf)) < 0:
        return None, None
    arch = buf.value.decode(errors="replace")
    if ll.llama_model_meta_val_str(model, f"{arch}.pooling_type".encode(), buf, len(buf)) < 0:
        return arch, None
    try:
        return arch, _GGUF_POOLINGS.get(int(buf.value))
    except ValueError:
        return arch, None


_GGML_LOG_ERROR = 4  # enum ggml_log_level: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5
_GGML_LOG_CONT = 5
_log_state = {"verbose": False, "last_level": 0}
_log_callback: Any = None  # the ctypes callback must stay referenced while llama.cpp may call it


def quiet_logs(ll: ModuleType, verbose: bool) -> None:
    """Let llama.cpp's C logs through only when verbose, errors always.

    llama-cpp-python's own callback maps ggml's levels with an older enum (a warning counts as an error there), so
    even its ERROR setting prints load-time warnings; we install our own callback, process-wide.
    """
    global _log_callback
    _log_state["verbose"] = verbose
    if _log_callback is not None:
        return
    def on_log(level: int, text: bytes | None, _user_data: Any) -> None:
        if level != _GGML_LOG_CONT:  # a continuation line keeps the level of the line it continues
            _log_state["last_level"] = level
        if text and (_log_state["verbose"] or _log_state["last_level"] >= _GGML_LOG_ERROR):
            sys.stderr.write(text.decode("utf-8", errors="replace"))

    _log_callback = ll.llama_log_callback(on_log)
    ll.llama_log_set(_log_callback, ctypes.c_void_p(0))


def init_backend(ll: ModuleType) -> None:
    global _backend_ready
    if not _backend_ready:
        ll.llama_backend_init()
        _backend_ready = True
