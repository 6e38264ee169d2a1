"""The watches of one inotify instance over a tree of folders, and the folders left without one.

`watch_trees` walks folders and adds a watch to each (in a worker thread: it lists folders and
resolves paths); `WatchTable` is what the event loop knows: watch descriptor <-> folder, and the
blind folders. A folder is watched before it is listed, so a subfolder made in between is seen
either by the listing or by an event. A folder whose watch fails is blind and is not entered:
the blind folders are the tops of the unwatched parts of the tree, each to be polled whole.
Once the watch limit is reached (ENOSPC) a walk tries no more and the rest of it is blind.

Two paths to one folder (a symlink followed to a folder already watched, a bind mount) give the
same watch descriptor; the walk keeps the first path and does not enter the second, which is also
what stops symlink loops. A known descriptor met under a new path whose old path is gone is a
rename: the descriptor takes the new path.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import os
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from asyncinotify import Inotify, Mask, Watch

#: What each folder's watch reports (IN_UNMOUNT, IN_IGNORED and IN_Q_OVERFLOW come anyway):
#: entries made, deleted, written, closed after writing, moved out and in, their attributes;
#: and the folder itself deleted or moved. Not IN_OPEN, IN_ACCESS or IN_CLOSE_NOWRITE, so that
#: listing a folder (ours or a scan's) raises no event.
FOLDER_MASK = (
    Mask.CREATE
    | Mask.DELETE
    | Mask.MODIFY
    | Mask.CLOSE_WRITE
    | Mask.MOVED_FROM
    | Mask.MOVED_TO
    | Mask.ATTRIB
    | Mask.DELETE_SELF
    | Mask.MOVE_SELF
    | Mask.ONLYDIR
    | Mask.EXCL_UNLINK
)
#: What asyncinotify's `Watch.path` is set to: the table keeps each watch's folder as a string
#: (`Event.path`, which would use it, is not read here).
_UNUSED = Path("/")
#: Errors of a folder that is no longer there (or is no longer a folder): nothing to watch.
GONE = frozenset({errno.ENOENT, errno.ENOTDIR, errno.ELOOP})
#: Why a folder has no watch, by errno (others: the errno's own text).
REASONS = {
    errno.ENOSPC: "the inotify watch limit is reached (fs.inotify.max_user_watches)",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOMEM: "the kernel is out of memory for watches",
}


@dataclasses.dataclass
class WalkResult:
    """What one walk did."""

    #: (folder, watch) for each folder watched, in the order of the walk.
    watched: list[tuple[str, Watch]] = dataclasses.field(default_factory=list)
    #: (folder, errno) for each folder that could not be watched (not entered).
    blind: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    #: The inotify instance was closed under the walk: it stopped.
    closed: bool = False


def watch_trees(
    inotify: Inotify,
    tops: Iterable[str],
    *,
    root: str,
    recursive: bool,
    follow_symlinks: bool,
    known: Mapping[int, str],
) -> WalkResult:
    """Watch each folder of `tops` and, if `recursive`, everything below it (run it in a worker
    thread while nothing else uses `inotify`). `known` is the table's watch descriptor ->
    folder."""
    result = WalkResult()
    owners: dict[int, str] = {}
    stack = list(tops)[::-1]
    limited = False
    while stack:
        folder = stack.pop()
        if limited:
            result.blind.append((folder, errno.ENOSPC))
            continue
        try:
            watch = inotify.add_watch(folder, _mask(folder == root, follow_symlinks))
        except ValueError:  # asyncinotify: the instance is closed
            result.closed = True
            break
        except OSError as error:
            if error.errno == errno.EBADF:
                result.closed = True
                break
            if error.errno not in GONE:
                limited = error.errno == errno.ENOSPC
                result.blind.append((folder, error.errno or 0))
            continue
        if _alias(folder, owners.get(watch.wd) or known.get(watch.wd)):
            continue
        owners[watch.wd] = folder
        result.watched.append((folder, watch))
        if recursive:
            stack.extend(reversed(list(_subfolders(folder, follow_symlinks))))
    return result


def _mask(is_root: bool, follow_symlinks: bool) -> Mask:
    """The root may be a symlink; a subfolder is one only if links are followed (otherwise a
    folder swapped for a link between the listing and the watch fails with ENOTDIR)."""
    return FOLDER_MASK if is_root or follow_symlinks else FOLDER_MASK | Mask.DONT_FOLLOW


def _alias(folder: str, other: str | None) -> bool:
    """Whether `other`, the folder a watch descriptor is known by, is still the same folder as
    `folder`: then `folder` is a second path to it (not a rename)."""
    if other is None or other == folder:
        return False
    try:
        mine, theirs = os.stat(folder), os.stat(other)
    except OSError:
        return False
    return (mine.st_dev, mine.st_ino) == (theirs.st_dev, theirs.st_ino)


def _subfolders(folder: str, follow_symlinks: bool) -> Iterator[str]:
    """The folders in `folder` (none if it cannot be listed: it changed under the walk)."""
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                try:
                    if entry.is_dir(follow_symlinks=follow_symlinks):
                        yield entry.path
                except OSError:
                    continue
    except OSError:
        return


class WatchTable:
    """Watch descriptor <-> folder, and the blind folders (folder -> errno), of one watcher."""

    def __init__(self, inotify: Inotify) -> None:
        self._inotify = inotify
        #: watch descriptor -> folder.
        self.folders: dict[int, str] = {}
        #: folder -> its watch.
        self._watches: dict[str, Watch] = {}
        #: Folders without a watch (the tops of the unwatched parts) -> why (an errno).
        self.blind: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self.folders)

    def __contains__(self, folder: str) -> bool:
        return folder in self._watches

    def record(self, result: WalkResult, *, whole: bool = False) -> tuple[list[str], bool]:
        """Take in what a walk did: (the folders that left the blind set, whether new folders
        went blind). `whole`: the walk went over the whole tree, so what it did not meet is
        gone (after an overflow, whose lost events may have said so)."""
        if whole:
            self._keep_only(result)
        sighted: list[str] = []
        for folder, watch in result.watched:
            old = self.folders.get(watch.wd)
            if old is not None and old != folder and self._watches.get(old) is watch:
                del self._watches[old]  # renamed: the descriptor takes the new path
            self.folders[watch.wd] = folder
            self._watches[folder] = watch
            watch.path = _UNUSED  # ours is `folder`: its own Path cost some 300 bytes a watch
            if self.blind.pop(folder, None) is not None:
                sighted.append(folder)
        went_blind = False
        for folder, code in result.blind:
            went_blind |= folder not in self.blind
            self.blind[folder] = code
        result.watched.clear()  # the walk's task may outlive this: keep nothing twice
        result.blind.clear()
        return sighted, went_blind

    def wd_of(self, folder: str) -> int:
        """The watch descriptor of `folder` (-1 if it has no watch)."""
        watch = self._watches.get(folder)
        return -1 if watch is None else watch.wd

    def _keep_only(self, result: WalkResult) -> None:
        met = {folder for folder, _ in result.watched}
        for folder in [f for f in self._watches if f not in met]:
            self._drop(folder)
        met_blind = {folder for folder, _ in result.blind}
        for folder in [f for f in self.blind if f not in met_blind]:
            del self.blind[folder]

    def _drop(self, folder: str) -> None:
        watch = self._watches.pop(folder)
        if self.folders.get(watch.wd) == folder:
            del self.folders[watch.wd]
        # already gone with its folder (EINVAL), or the instance is closed (ValueError)
        with contextlib.suppress(OSError, ValueError):
            self._inotify.rm_watch(watch)

    def forget(self, wd: int) -> str | None:
        """The kernel dropped watch `wd` (IN_IGNORED): its folder, if it was one of ours."""
        folder = self.folders.pop(wd, None)
        if folder is not None:
            watch = self._watches.get(folder)
            if watch is not None and watch.wd == wd:
                del self._watches[folder]
        return folder

    def drop_below(self, gone: set[str]) -> bool:
        """Remove the watches of the folders in `gone` and below them (moved away or deleted),
        and their blind entries. Whether any blind entry went."""
        for folder in [f for f in self._watches if _within(f, gone)]:
            self._drop(folder)
        lost = [folder for folder in self.blind if _within(folder, gone)]
        for folder in lost:
            del self.blind[folder]
        return bool(lost)

    def blind_reason(self) -> str:
        """Why the blind folders have no watch, each reason once."""
        codes = sorted(set(self.blind.values()))
        return "; ".join(dict.fromkeys(REASONS.get(code, os.strerror(code)) for code in codes))


def _within(path: str, tops: set[str]) -> bool:
    """Whether `path` is one of `tops` or below one of them."""
    while True:
        if path in tops:
            return True
        parent = os.path.dirname(path)
        if parent == path:
            return False
        path = parent
