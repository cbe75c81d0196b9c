'''What the benchmark asks: "free" answers to short varied questions, or "edit": rewrite a given module with one
small change, the single user's everyday coding request, where the answer repeats most of its prompt.

N concurrent streams take the first N prompts of a workload (cycling); each edit stream renames the class to a
different name, so no two prompts are the same.
'''

from __future__ import annotations

WORKLOADS = ("free", "edit")
Messages = list[dict[str, str]]

FREE_PROMPTS = [
    "Write a short story about a lighthouse keeper who finds a message in a bottle.",
    "Explain how a refrigerator works to a ten-year-old.",
    "List some tips for learning a new programming language.",
    "What are the main causes of the seasons on Earth?",
    "Describe a walk through a busy market in the morning.",
    "Why is the sky blue? Give a detailed answer.",
    "Write a poem about autumn leaves and the wind.",
    "How do vaccines train the immune system?",
    "Give me a recipe for a simple vegetable soup.",
    "Explain the difference between a list and a tuple in Python.",
    "What should I pack for a week-long hiking trip?",
    "Tell me about the history of the printing press.",
    "How does a bill become a law? Explain step by step.",
    "Write a friendly email inviting a colleague to lunch.",
    "What is photosynthesis and why does it matter?",
    "Describe the rules of chess for a beginner.",
]

# A 2.5 kB module to rewrite; the class name appears several times, as a rename would find it.
EDIT_SOURCE = '''"""A small in-memory inventory with reservations, used by the order service."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


class OutOfStockError(RuntimeError):
    """Raised when a reservation asks for more units than are available."""


@dataclass
class StockItem:
    sku: str
    name: str
    units: int = 0
    reserved: int = 0

    @property
    def available(self) -> int:
        return self.units - self.reserved


@dataclass
class InventoryLedger:
    items: dict[str, StockItem] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, sku: str, name: str, units: int) -> StockItem:
        """Add units of an item, creating it on first use."""
        if units <= 0:
            raise ValueError(f"units must be positive, got {units}")
        with self._lock:
            item = self.items.setdefault(sku, StockItem(sku, name))
            item.units += units
            return item

    def reserve(self, sku: str, units: int) -> None:
        """Hold units for an order until it ships or is cancelled."""
        with self._lock:
            item = self.items.get(sku)
            if item is None or item.available < units:
                raise OutOfStockError(f"cannot reserve {units} of {sku}")
            item.reserved += units

    def release(self, sku: str, units: int) -> None:
        """Give back units held for a cancelled order."""
        with self._lock:
            item = self.items[sku]
            item.reserved = max(0, item.reserved - units)

    def ship(self, sku: str, units: int) -> None:
        """Ship reserved units: they leave the stock for good."""
        with self._lock:
            item = self.items[sku]
            if item.reserved < units:
                raise ValueError(f"only {item.reserved} of {sku} are reserved")
            item.reserved -= units
            item.units -= units

    def report(self) -> list[str]:
        """One line per item, sorted by SKU."""
        with self._lock:
            return [f"{i.sku}: {i.available}/{i.units} available ({i.name})"
                    for i in sorted(self.items.values(), key=lambda i: i.sku)]


def merge_ledgers(first: InventoryLedger, second: InventoryLedger) -> InventoryLedger:
    """A new InventoryLedger holding the units of both (reservations are not carried over)."""
    merged = InventoryLedger()
    for ledger in (first, second):
        for item in ledger.items.values():
            merged.add(item.sku, item.name, item.units)
    return merged
'''
EDIT_OLD_NAME = "InventoryLedger"
EDIT_NEW_NAMES = ["StockBook", "WarehouseLedger", "StockRegister", "InventoryBook", "GoodsLedger", "StoreLedger",
                  "SupplyLedger", "StockJournal", "ItemLedger", "DepotLedger", "ShelfLedger", "CargoLedger",
                  "StockTable", "InventoryRecord", "PartsLedger", "StockTracker"]


def edit_prompt(new_name: str) -> str:
    return (f"Rename the class `{EDIT_OLD_NAME}` to `{new_name}` everywhere in this Python module. Reply with the "
            f"whole rewritten module in one code block and nothing else.\n\n```python\n{EDIT_SOURCE}```")


def prompt_messages(n: int, workload: str = "free") -> list[Messages]:
    """The chat messages of N concurrent requests."""
    if workload == "free":
        texts = [FREE_PROMPTS[i % len(FREE_PROMPTS)] for i in range(n)]
    elif workload == "edit":
        texts = [edit_prompt(EDIT_NEW_NAMES[i % len(EDIT_NEW_NAMES)]) for i in range(n)]
    else:
        raise ValueError(f"unknown workload {workload!r}; choose from {', '.join(WORKLOADS)}")
    return [[{"role": "user", "content": text}] for text in texts]
