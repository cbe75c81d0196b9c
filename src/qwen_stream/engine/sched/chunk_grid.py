"""Where prefill chunks are cut: at fixed positions, so a prompt's KV is the same whatever the cache held.

Every prefill chunk ends at the next multiple of the chunk size (or the prompt's end), never across one: a chunk is
a function of its positions alone, not of where the prompt's computation began. That is what lets a request with
its own seed be answered as if cold whatever the cache holds. A runner's numbers depend on the shape of the batch
they come from (llama.cpp's row kernels group rows in blocks and tails; a matrix multiply sums in another order for
another size: measured, a 700-token prompt's last logits row moved by 0.2-0.8 when its chunks were cut elsewhere,
benchmarks/chunk_invariance.py), so a cached position is exactly what a cold prefill computes only if it came from
the same chunk: a whole chunk ``[k*size, (k+1)*size)`` of the same tokens, computed on exactly-computed positions
before it. Positions filled by decoding (one token at a time) or by a partial last chunk never are.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ChunkGrid:
    size: int  # the prefill chunk: positions per whole chunk

    def __post_init__(self) -> None:
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"the prefill chunk must be an int >= 1, got {self.size!r}")

    def floor(self, position: int) -> int:
        """The grid point at or before ``position``: how much of a prefix whole chunks cover."""
        return position - position % self.size

    def piece(self, start: int, end: int) -> int:
        """How many tokens the chunk starting at ``start`` takes, for a prompt ending at ``end``: up to the next grid
        point or the end, whichever comes first."""
        return min(self.floor(start) + self.size, end) - start

    def is_whole(self, start: int, length: int) -> bool:
        """Whether ``[start, start + length)`` is one whole chunk of the grid (its KV reusable exactly later)."""
        return length == self.size and start % self.size == 0
