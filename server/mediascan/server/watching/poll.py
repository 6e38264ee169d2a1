"""`FolderPoller`: what polling notices, where no event comes (WATCH_MODE_POLL, and the folders
a watch could not cover). Each `poll` walks the tree in the calling thread and keeps, for each
folder, a digest of its video files (name, size, modification time, inode). A folder whose
digest changed since the previous poll is reported in `Changed.folders` (listed again by a
targeted rescan: files new, changed, removed or moved); a folder that appeared or went away, in
`Changed.trees` (walked whole, or its videos removed).

So a poll stats only the video files (a subfolder is told by the listing's entry type), reads no
file, and a poll that finds nothing makes no job. It keeps 16 bytes a folder, not a row per file:
memory grows with the number of folders, never with the files.
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Iterable

from .signals import Changed

#: The digest of a folder that could not be listed (it may become listable again).
UNREADABLE = b"\0" * 16


class FolderPoller:
    """Polls the trees below `tops` (with `recursive` false, only those folders); `suffixes`:
    the names that are videos (".mp4", ...)."""

    def __init__(
        self,
        tops: Iterable[str],
        *,
        recursive: bool,
        follow_symlinks: bool,
        suffixes: frozenset[str],
    ) -> None:
        self.tops = tuple(tops)
        self._recursive = recursive
        self._follow = follow_symlinks
        self._suffixes = suffixes
        self._digests: dict[str, bytes] | None = None
        self._closed = threading.Event()
        #: Video files stat'ed by the latest poll.
        self.files = 0

    def close(self) -> None:
        """Stop a poll running in another thread (it returns None)."""
        self._closed.set()

    def poll(self) -> Changed | None:
        """What changed since the previous poll; None on the first (it takes the baseline), when
        nothing changed, or when closed meanwhile."""
        digests: dict[str, bytes] = {}
        self.files = 0
        visited: set[tuple[int, int]] = set()
        stack = list(reversed(self.tops))
        while stack:
            if self._closed.is_set():
                return None
            folder = stack.pop()
            digest, subfolders = self._read(folder, visited)
            digests[folder] = digest
            if self._recursive:
                stack.extend(reversed(subfolders))
        previous, self._digests = self._digests, digests
        if previous is None:
            return None
        return _compare(previous, digests)

    def _read(self, folder: str, visited: set[tuple[int, int]]) -> tuple[bytes, list[str]]:
        """The digest of `folder`'s video files, and its subfolders to walk."""
        files: list[str] = []
        subfolders: list[str] = []
        try:
            info = os.stat(folder)
            if (info.st_dev, info.st_ino) in visited:  # a link loop, a second path to it
                return b"", []
            visited.add((info.st_dev, info.st_ino))
            with os.scandir(folder) as listing:
                for entry in listing:
                    kind = self._kind(entry)
                    if kind == "folder":
                        subfolders.append(entry.path)
                    elif kind is not None:
                        files.append(kind)
        except OSError:
            return UNREADABLE, []
        files.sort()
        subfolders.sort()
        text = "\0".join(files).encode(errors="surrogateescape")
        return hashlib.blake2b(text, digest_size=16).digest(), subfolders

    def _kind(self, entry: os.DirEntry[str]) -> str | None:
        """ "folder" for a subfolder to walk; a video file's line; None for anything else."""
        try:
            if entry.is_dir(follow_symlinks=self._follow):
                return "folder"
            name = entry.name
            if name[name.rfind(".") :].lower() not in self._suffixes:
                return None
            if entry.is_symlink() and not self._follow:
                return None
            info = entry.stat(follow_symlinks=self._follow)
        except OSError:  # gone since the listing, or a dangling link: as if not there
            return None
        if not stat.S_ISREG(info.st_mode):
            return None
        self.files += 1
        return f"f/{name}/{info.st_size}/{info.st_mtime_ns}/{info.st_ino}"


def _compare(previous: dict[str, bytes], digests: dict[str, bytes]) -> Changed | None:
    """Folders whose files changed; and the topmost of the folders that appeared or went away
    (not those below a folder that cannot be listed now: they may be there still)."""
    folders = {f for f, digest in digests.items() if f in previous and previous[f] != digest}
    new = {f for f in digests if f not in previous}
    gone = {f for f in previous if f not in digests}
    trees = {f for f in new if os.path.dirname(f) not in new}
    for folder in gone:
        parent = os.path.dirname(folder)
        if parent not in gone and digests.get(parent) != UNREADABLE:
            trees.add(folder)
    if not folders and not trees:
        return None
    return Changed(folders=frozenset(folders), trees=frozenset(trees))
