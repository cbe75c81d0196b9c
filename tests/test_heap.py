"""release_free_heap gives freed heap pages back: RSS falls once a fragmented heap is trimmed."""

from __future__ import annotations

import re
import sys

import pytest

from qwen_stream.heap import release_free_heap


def _anon_mb() -> float:
    with open("/proc/self/status") as status:
        return int(re.search(r"RssAnon:\s+(\d+)", status.read()).group(1)) / 1024  # type: ignore[union-attr]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_trim; elsewhere it does nothing")
def test_trimming_a_fragmented_heap_lowers_rss() -> None:
    # 150 MB of 4 kB blocks from malloc (bigger than pymalloc's 512-byte limit, smaller than the mmap threshold),
    # one in 16 kept alive (64 kB apart): the freed blocks between them are not at the heap's top, so glibc keeps them all
    blocks = [bytes(4000) for _ in range(37_500)]
    kept = blocks[::16]
    del blocks
    before = _anon_mb()
    assert release_free_heap() is True
    after = _anon_mb()
    assert before - after > 50, (before, after)
    assert len(kept) == 37_500 // 16 + 1  # the survivors are still there
