"""`Targets`: what a targeted rescan walks (a library's watch saw these folders change). The
walk starts at the library's root, as any scan does, but lists only the target folders (their
own files) and the target trees (everything below them), and opens only the folders on the way
to them; so moves between target folders are found, as in a whole rescan.

Subfolders gone from a listed target folder (a watch reports a deleted or moved-out folder as
a change of its parent), and trees that are gone, lose their videos: `gone_videos`."""

from __future__ import annotations

import os
from collections.abc import Iterable

from .store.protocol import LibraryIndex, library_key_path


def _inside(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


class Targets:
    def __init__(self, root: str, folders: Iterable[str], trees: Iterable[str]) -> None:
        self.root = root
        self.trees = frozenset(trees)
        self.folders = frozenset(f for f in folders if not self.in_tree(f))
        #: Target folders listed, with the names of the subfolders the listing met.
        self._subfolders: dict[str, set[str]] = {}
        #: Paths toward a target that are gone: (path, device of the folder that lacks it).
        self._gone: list[tuple[str, int]] = []

    def in_tree(self, path: str) -> bool:
        return any(_inside(path, tree) for tree in self.trees)

    def lists(self, path: str) -> bool:
        """The walk reads this folder's entries (a target folder, or within a target tree)."""
        return path in self.folders or self.in_tree(path)

    def enters(self, path: str) -> bool:
        """The walk opens this subfolder of a listed folder (within a tree, or on the way to
        a target)."""
        return self.in_tree(path) or any(
            _inside(target, path) for target in (*self.folders, *self.trees)
        )

    def toward(self, path: str) -> list[str]:
        """The names of the subfolders of `path` (a folder that is not listed) on the way to
        a target."""
        prefix = path.rstrip("/") + "/"
        names = {
            target[len(prefix) :].split("/", 1)[0]
            for target in (*self.folders, *self.trees)
            if target.startswith(prefix)
        }
        return sorted(names)

    def met_subfolder(self, folder: str, name: str) -> None:
        """A listing of target folder `folder` met subfolder `name`."""
        self._subfolders.setdefault(folder, set()).add(name)

    def listed_target(self, folder: str) -> None:
        """`folder` was listed whole: if it is a target folder, its subfolders are known."""
        if not self.in_tree(folder):
            self._subfolders.setdefault(folder, set())

    def gone(self, path: str, device: int) -> None:
        """`path`, on the way to a target or a target itself, does not exist (its parent, on
        `device`, was read)."""
        self._gone.append((path, device))

    def gone_videos(self, index: LibraryIndex, listed: dict[str, int]) -> list[tuple[str, int]]:
        """The videos of the index below a gone path, or in a subfolder that a listed target
        folder no longer holds, with the device of the folder that lacks it."""
        found: list[tuple[str, int]] = []
        for key in index.keys:
            path = library_key_path(key)
            device = self._lost(path, listed)
            if device is not None:
                found.append((path, device))
        return found

    def _lost(self, path: str, listed: dict[str, int]) -> int | None:
        """The device of the folder that lacks `path`'s folder, if it is gone."""
        for gone, device in self._gone:
            if _inside(path, gone):
                return device
        parent = os.path.dirname(path)
        for folder, names in self._subfolders.items():
            prefix = folder.rstrip("/") + "/"
            if (
                parent != folder
                and path.startswith(prefix)
                and folder in listed
                and path[len(prefix) :].split("/", 1)[0] not in names
            ):
                return listed[folder]
        return None


#: Most target paths whose indexes a targeted rescan reads one by one; past it, the whole
#: folder's index is read at once.
MAX_INDEX_READS = 256


def index_tops(root: str, folders: Iterable[str], trees: Iterable[str]) -> list[str] | None:
    """The topmost of the target folders and trees of a targeted rescan of `root`: the library
    index it needs is the videos below these (at any depth: a target folder's gone subfolders
    lose theirs), nothing else; a target outside `root` needs none (the walk never lists it).
    None when that is the whole index anyway (a target is `root`, or more than
    MAX_INDEX_READS remain) or no target is inside `root`.

    A folder on the way to a target that is found gone loses only the videos below the
    targets: the watch reports its parent's change too, and that rescan removes the rest."""
    root = root.rstrip("/") or "/"
    every = {path.rstrip("/") or "/" for path in (*folders, *trees)}
    if root in every:
        return None
    tops = sorted(path for path in every if _inside(path, root) and not below_any(path, every))
    if not tops or len(tops) > MAX_INDEX_READS:
        return None
    return tops


def below_any(path: str, folders: set[str]) -> bool:
    """Whether a folder strictly above `path` is in `folders`."""
    parent = os.path.dirname(path)
    while parent != path:
        if parent in folders:
            return True
        path, parent = parent, os.path.dirname(parent)
    return False
