"""Write a file so that readers see the old one or the whole new one, never a part: into a temporary file beside it,
renamed over it only when the writing block finishes (a crash or an exception leaves no half file behind).

Used for everything qwen-stream caches: downloaded model files (models/fetch.py), saved prompts
(engine/prompt_cache/files.py) and the fast prefill's int8 weights (engine/runners/int8_prefill.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

TEMP_SUFFIX = ".part"  # a name ending so, left by a process that died while writing, is a stale temporary file


@contextmanager
def atomic_output(target: Path) -> Iterator[IO[bytes]]:
    """A binary file to write ``target``'s new content to; renamed to ``target`` when the block ends normally,
    deleted otherwise. The temporary name is unique per process and thread (two writers never share one)."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.{threading.get_ident()}{TEMP_SUFFIX}")
    try:
        with tmp.open("wb") as out:
            yield out
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
