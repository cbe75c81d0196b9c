"""qwen-stream: stream answers from Qwen-family chat models, from Python, a terminal, a browser or HTTP.

    from qwen_stream import ChatModel
    model = ChatModel.load()
    for text in model.chat_stream("请给我讲一个有趣的故事"):
        print(f"\\rQwen: {text}", end="", flush=True)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from qwen_stream import openmp

openmp.apply_defaults()  # before anything imports torch: see openmp.py

from qwen_stream.errors import EngineError, EngineOverloadedError  # noqa: E402
from qwen_stream.types import (  # noqa: E402
    FinishReason,
    SamplingParams,
    StreamEvent,
    TokenLogprob,
    ToolCall,
    ToolCallDelta,
)

if TYPE_CHECKING:
    from qwen_stream.api import Answer, ChatModel
    from qwen_stream.client.streams import AsyncRequestStream, RequestStream

__all__ = [
    "Answer",
    "AsyncRequestStream",
    "ChatModel",
    "EngineError",
    "EngineOverloadedError",
    "FinishReason",
    "RequestStream",
    "SamplingParams",
    "StreamEvent",
    "TokenLogprob",
    "ToolCall",
    "ToolCallDelta",
]
__version__ = "0.1.0"

_LAZY = {"ChatModel": "qwen_stream.api", "Answer": "qwen_stream.api", "RequestStream": "qwen_stream.client.streams",
         "AsyncRequestStream": "qwen_stream.client.streams"}


def __getattr__(name: str) -> Any:
    # torch and transformers load only when the API is touched, so `qwen-stream --help` stays instant.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'qwen_stream' has no attribute {name!r}")
