"""The folders that changed and are not yet quiet: each is reported once it has had no event for
the settle time, on its own clock, so a file being copied keeps its own folder back and no other.

Memory is one entry per folder, whatever the number of events: a folder's entry holds its
deadline, and a heap holds at most one (deadline, folder) per folder (a folder touched again
moves its deadline in the dict only; the heap entry is pushed on when it comes up early).
"""

from __future__ import annotations

import heapq
import os

from ..targets import below_any
from .signals import Changed


class QuietSet:
    """Pending folders and trees under one root, with their deadlines (loop time, seconds)."""

    def __init__(self, root: str, settle_s: float) -> None:
        self._root = root
        self._settle = settle_s
        #: folder -> when it is quiet (its last event + the settle time).
        self._due: dict[str, float] = {}
        #: Pending folders that are new trees (to be walked whole).
        self._trees: set[str] = set()
        self._heap: list[tuple[float, str]] = []

    def __len__(self) -> int:
        return len(self._due)

    def touch(self, folder: str, now: float, *, tree: bool = False) -> None:
        """An event in `folder` (or, with `tree`, `folder` appeared): it is quiet at now + settle.
        An event within a pending tree moves the tree's deadline instead: a tree being copied in
        is reported once, when all of it is quiet."""
        if tree:
            self._trees.add(folder)
        elif self._trees:
            folder = self._tree_holding(folder) or folder
        deadline = now + self._settle
        if folder not in self._due:
            heapq.heappush(self._heap, (deadline, folder))
        self._due[folder] = deadline

    def next_deadline(self) -> float | None:
        """When the next folder may be quiet (None if none is pending)."""
        while self._heap:
            deadline, folder = self._heap[0]
            due = self._due.get(folder)
            if due == deadline:
                return deadline
            heapq.heappop(self._heap)
            if due is not None:  # touched since: on again, at its real deadline
                heapq.heappush(self._heap, (due, folder))
        return None

    def take_quiet(self, now: float) -> Changed | None:
        """The folders and trees quiet at `now`, taken out of the set (None if there are none)."""
        folders: set[str] = set()
        trees: set[str] = set()
        while (deadline := self.next_deadline()) is not None and deadline <= now:
            _, folder = heapq.heappop(self._heap)
            del self._due[folder]
            if folder in self._trees:
                self._trees.discard(folder)
                trees.add(folder)
            else:
                folders.add(folder)
        if not folders and not trees:
            return None
        trees = {tree for tree in trees if not below_any(tree, trees)}
        kept = frozenset(folder for folder in folders if not _within_any(folder, trees))
        return Changed(folders=kept, trees=frozenset(trees))

    def clear(self) -> None:
        """Forget everything pending (after an overflow: the user rescans all)."""
        self._due.clear()
        self._trees.clear()
        self._heap.clear()

    def _tree_holding(self, folder: str) -> str | None:
        """The pending tree that `folder` is in, if any (itself or a folder above it)."""
        path = folder
        while len(path) > len(self._root):
            if path in self._trees:
                return path
            path = os.path.dirname(path)
        return None


def _within_any(path: str, trees: set[str]) -> bool:
    return path in trees or below_any(path, trees)
