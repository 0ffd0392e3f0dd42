"""A least-recently-used mapping bounded by entry count and by total weight (say, characters held).

Every cache the server keeps across requests is one of these, so that a day of editing (new
documents, versions, files, settings) holds at most what the limits allow.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterator
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class LRU(Generic[K, V]):
    """`max_entries` entries and `max_weight` total `weigh(key, value)` at most; the least recently
    read or written entries go first. An entry heavier than `max_weight` on its own is not kept.
    Safe to use from several threads."""

    def __init__(self, max_entries: int, max_weight: int | None = None,
                 weigh: Callable[[K, V], int] | None = None) -> None:
        self.max_entries, self.max_weight = max_entries, max_weight
        self._weigh = weigh or (lambda k, v: 1)
        self._items: OrderedDict[K, tuple[V, int]] = OrderedDict()
        self._lock = threading.Lock()
        self.weight = 0

    def get(self, key: K, default: V | None = None) -> V | None:
        with self._lock:
            item = self._items.get(key)
            if item is None:
                return default
            self._items.move_to_end(key)
            return item[0]

    def __getitem__(self, key: K) -> V:
        with self._lock:
            value = self._items[key][0]
            self._items.move_to_end(key)
            return value

    def __setitem__(self, key: K, value: V) -> None:
        weight = self._weigh(key, value)
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.weight -= old[1]
            if self.max_weight is not None and weight > self.max_weight:
                return
            self._items[key] = (value, weight)
            self.weight += weight
            while len(self._items) > self.max_entries or (
                    self.max_weight is not None and self.weight > self.max_weight):
                _, (_, dropped) = self._items.popitem(last=False)
                self.weight -= dropped

    def pop(self, key: K, default: V | None = None) -> V | None:
        with self._lock:
            item = self._items.pop(key, None)
            if item is None:
                return default
            self.weight -= item[1]
            return item[0]

    def drop_where(self, predicate: Callable[[K], bool]) -> None:
        """Remove every entry whose key matches."""
        with self._lock:
            for key in [k for k in self._items if predicate(k)]:
                self.weight -= self._items.pop(key)[1]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.weight = 0

    def __contains__(self, key: object) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def keys(self) -> list[K]:
        with self._lock:
            return list(self._items)

    def __iter__(self) -> Iterator[K]:
        return iter(self.keys())
