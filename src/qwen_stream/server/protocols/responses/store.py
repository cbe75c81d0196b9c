"""Finished Responses kept in memory so a client can chain turns with ``previous_response_id``.

Bounded: the least recently used response is dropped first once ``max_size`` are kept (``--responses-store-size``;
0 keeps none). Lost on restart, as a local server's state is. An id that is not here (never stored, evicted,
deleted, from before a restart) is a 404 for the client, never a crash.
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from qwen_stream.server.wire.errors import APIError

DEFAULT_RESPONSE_STORE_SIZE = 1024


@dataclass(slots=True, frozen=True)
class StoredResponse:
    conversation: list[dict[str, Any]]  # input and output as chat messages, without the instructions
    body: dict[str, Any]  # the Response object, as returned


class ResponseStore:
    """An LRU map of response id -> StoredResponse. Used from the event loop only, so it needs no lock."""

    def __init__(self, max_size: int) -> None:
        if max_size < 0:
            raise ValueError(f"the response store size must be >= 0, got {max_size}")
        self.max_size = max_size
        self._items: OrderedDict[str, StoredResponse] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    def put(self, response_id: str, stored: StoredResponse) -> None:
        if self.max_size == 0:
            return
        self._items[response_id] = stored
        self._items.move_to_end(response_id)
        while len(self._items) > self.max_size:
            self._items.popitem(last=False)

    def get(self, response_id: str, param: str = "response_id") -> StoredResponse:
        """The stored response (now the most recently used), or a 404 ``APIError``."""
        stored = self._items.get(response_id)
        if stored is None:
            raise APIError(404, f"response with id {response_id!r} not found (not stored, expired from the store "
                                f"of {self.max_size}, or the server restarted)", "invalid_request_error",
                           param=param, code="response_not_found")
        self._items.move_to_end(response_id)
        return StoredResponse(copy.deepcopy(stored.conversation), stored.body)

    def delete(self, response_id: str) -> None:
        self.get(response_id)
        del self._items[response_id]
