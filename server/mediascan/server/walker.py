"""The walk of one scan's folder, run in a thread of its own (`Walker.run`): lists each folder
through descriptors, compares its video files with the library's index, opens those to probe and
hands them over in batches (`Batch`) to the scan on the event loop."""

from __future__ import annotations

import dataclasses
import errno
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import NamedTuple

from .errors import Code
from .escaping import encodes
from .jobs import ScanSpec
from .mounts import Mounts
from .moves import MoveIndex
from .open_files import OpenFiles
from .roots import DIR_FLAGS, AllowedRoots, nofollow, opened_path
from .store import LibraryIndex, library_key_path
from .targets import Targets
from .videonames import VIDEO_SUFFIXES, is_video_name
from .walk_errors import (
    WalkError,
    already_scanned,
    file_error,
    folder_error,
    kind_of,
    not_regular,
    not_utf8,
    outside_roots,
    pseudo_file_system,
)

log = logging.getLogger(__name__)

WALK_BATCH = 256  # files to probe (or entries in error) per hand-over from the walker thread
COMPARE_CHUNK = 1024  # entries of one folder the walker reads before comparing their files
TALLY_BATCH = 8192  # unchanged files that make a hand-over due
HAND_OVER_INTERVAL = 0.05  # seconds: what the walker holds reaches the loop at least this often

#: O_NONBLOCK: a FIFO swapped in after the listing does not block the open; O_NOCTTY: a terminal
#: never becomes the server's.
_FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class FoundFile(NamedTuple):
    """A new or changed video file, opened by the walk (`fd`, a regular file) and handed over
    to be probed; size, time and device are those of the file opened."""

    path: str
    size: int
    mtime_ns: int
    dev: int
    fd: int
    #: The library's path of an unmet video with the same size and time: it may have moved here.
    moved_from: str = ""
    #: Unchanged, handed over only to be verified (a DECODE scan, a video never verified).
    verify_only: bool = False
    #: The latest of its modification and status-change times: when it last changed (a copy
    #: that keeps the source's modification time still changes the status-change time).
    changed_ns: int = 0


@dataclasses.dataclass(slots=True)
class Batch:
    """One hand-over from the walker: files to probe, entries in error, and the tally of the
    unchanged files met since the previous hand-over (counted, never handed over one by one)."""

    files: list[FoundFile]
    errors: list[WalkError]
    unchanged: int
    unchanged_bytes: int
    last_unchanged: str  #: the newest of them, for `current_path`
    undated: list[tuple[int, str]]  #: (dev, path) of unchanged rows stored without a device


Item = Batch | None  # None ends the walk
_Stat = tuple[str, int, int, int]  # a regular video file in a folder: name, size, mtime_ns, dev


class _Folder:
    """A folder the walker opened: its descriptor stays open while it is listed and while
    subfolders found in it wait to be opened relative to it."""

    __slots__ = ("dev", "fd", "path", "prefix", "users")

    def __init__(self, fd: int, path: str) -> None:
        self.fd = fd
        self.dev = -1  #: its device, once listed
        self.path = path
        self.prefix = path if path.endswith("/") else path + "/"
        self.users = 1  # its listing, then one per subfolder still to open

    def leave(self) -> None:
        """One user is done with it: the last closes it."""
        self.users -= 1
        if self.users == 0:
            os.close(self.fd)


class Walker:
    """Depth-first walk of a scan's folder, run in a worker thread.

    Compares every video file it finds with `index`, the library's index of the folder: a file
    whose key is there is unchanged, and its key is taken out; such a file is only counted
    (unless the scan is `full`). The path of any other file goes into `met`. Hands over batches
    of new and changed files, of entries it could not handle and of those counts to
    `hand_over`, and records in `listed` the device of every folder whose entries were all read
    without an error.

    Nothing is ever looked up by its whole path: the scanned folder is the open descriptor
    `root` returns, each subfolder is opened relative to its parent's descriptor and each file
    to probe relative to its folder's, without following a symbolic link (`O_NOFOLLOW`) unless
    the scan follows links. A file is opened here, once, checked to be a regular file with
    `fstat`, and its descriptor is what the prober reads, so an entry swapped for a link during
    the scan is reported, never followed out of the allowed roots. With `follow_symlinks`, what
    a link led to is checked against the allowed roots once opened, before anything is read."""

    def __init__(
        self,
        spec: ScanSpec,
        roots: AllowedRoots,
        hand_over: Callable[[Item], bool],
        stop: threading.Event,
        index: LibraryIndex,
        *,
        root: Callable[[], int | None],
        files: OpenFiles,
        mounts: Mounts | None = None,
        suffixes: frozenset[str] = VIDEO_SUFFIXES,
        counted: Callable[[str, int, int], bool] | None = None,
        gone_loses: bool = True,
    ) -> None:
        self._spec = spec
        self._counted = counted  # a file not in `index` counted already (`find_walk.py`)
        self._gone_loses = gone_loses  # gone target folders lose their videos (a watch's)
        self._suffixes = suffixes  # of the names that are videos (`videonames`)
        self._mounts = mounts or Mounts()
        self._roots = roots
        self._outbox = Outbox(hand_over)
        self._stop = stop
        self._root = root
        self._open = files
        self.index = index  # shared (a server keeps it): copied before the walk takes keys out
        self.met: set[str] = set()  # paths of the files found that the index did not match
        self.listed: dict[str, int] = {}  # folders listed completely: their device
        #: Once the walk is over: (path, device of its folder) of the videos to remove.
        self.missing: list[tuple[str, int]] = []
        self._moves = MoveIndex()  # which unmet video a new file may be
        #: A targeted rescan's folders and trees (`targets.py`); None: the whole folder.
        self._targets = (
            Targets(spec.path, spec.folders, spec.trees) if spec.folders or spec.trees else None
        )
        self._seen: set[tuple[int, int]] = set()  # folders entered, when following links
        self._stack: list[tuple[_Folder, str]] = []  # (parent, name) of folders to open

    def run(self) -> None:
        """The walk, in the calling thread. Whatever ends it, the scan is told (the last
        hand-over, None), so that a walker that dies fails its scan instead of hanging it; its
        error is logged with the traceback and raised to the scan."""
        try:
            self.index = self.index.copy()
            fd = self._root()
            if fd is None or not self._walk(_Folder(fd, self._spec.path)):
                return
            # The walk is complete: what it did not meet may be removed.
            self.missing = missing_videos(self.index, self.listed, self.met, self._spec)
            if self._targets is not None and self._spec.recursive and self._gone_loses:
                self.missing += self._targets.gone_videos(self.index, self.listed)
            if self._outbox.holds():
                self._outbox.send()
        except BaseException:
            log.exception("the walker of %s died; its scan fails", self._spec.path)
            raise
        finally:
            while self._stack:  # the walk stopped early: close the folders still held open
                self._stack.pop()[0].leave()
            for found in self._outbox.files:  # opened, never handed over
                self._open.close(found.fd)
            if not self._stop.is_set():
                self._outbox.end()

    def _walk(self, root: _Folder) -> bool:
        if self._spec.follow_symlinks:
            info = os.fstat(root.fd)
            self._seen.add((info.st_dev, info.st_ino))
        if not self._list(root):
            return False
        while self._stack:
            if self._stop.is_set():
                return False
            parent, name = self._stack.pop()
            folder = self._open_folder(parent, name)
            parent.leave()
            if folder is not None and not self._list(folder):
                return False
        return True

    def _open_folder(self, parent: _Folder, name: str) -> _Folder | None:
        """Open a subfolder relative to its parent; None (reported) if it cannot be walked."""
        path = parent.prefix + name
        follow = self._spec.follow_symlinks
        try:
            fd = os.open(name, DIR_FLAGS | nofollow(follow), dir_fd=parent.fd)
        except OSError as exc:
            # A target gone since the watch saw it; for a find walk also one now a file or a
            # link, on the way to a target (the walk of everything passes over those).
            swapped = exc.errno in (errno.ENOTDIR, errno.ELOOP) and not self._gone_loses
            targets = self._targets
            if targets is not None and (
                isinstance(exc, FileNotFoundError) or (swapped and not targets.lists(parent.path))
            ):
                targets.gone(path, parent.dev)
            else:
                self._outbox.error(folder_error(path, exc, follow=follow))
            return None
        try:
            problem = self._check_folder(fd, path, parent)
        except OSError as exc:
            problem = folder_error(path, exc, follow=follow)
        if problem is not None:
            os.close(fd)
            self._outbox.error(problem)
            return None
        return _Folder(fd, path)

    def _check_folder(self, fd: int, path: str, parent: _Folder) -> WalkError | None:
        """A subfolder on a pseudo file system is not entered (`mounts.py`). With
        `follow_symlinks`: what a link led to must lie inside the allowed roots and must not
        have been walked already."""
        follow = self._spec.follow_symlinks
        if follow and self._roots and not self._roots.holds(fd):
            return outside_roots(path, folder=True)
        info = os.fstat(fd)
        if info.st_dev != parent.dev:  # a mount point (or a link to another device)
            kind = self._mounts.pseudo(opened_path(fd))
            if kind:
                return pseudo_file_system(path, kind)
        if follow:
            key = (info.st_dev, info.st_ino)
            if key in self._seen:
                return already_scanned(path)
            self._seen.add(key)
        return None

    def _list(self, folder: _Folder) -> bool:
        """Read one folder's entries, compare its video files with the index and open those to
        probe; False when the scan is over and the walk must stop. Leaves the folder."""
        try:
            targets = self._targets
            if targets is not None and not targets.lists(folder.path):
                return self._toward(folder, targets)
            return self._read(folder)
        finally:
            folder.leave()

    def _toward(self, folder: _Folder, targets: Targets) -> bool:
        """A folder on the way to a target: not listed; only the subfolders toward the
        targets are opened."""
        folder.dev = os.fstat(folder.fd).st_dev
        for name in reversed(targets.toward(folder.path)):
            folder.users += 1
            self._stack.append((folder, name))
        return True

    def _read(self, folder: _Folder) -> bool:
        """The loop is the hot path of a rescan: a video file that is a regular file is handled
        inline, with locals only; everything else goes through `_visit`."""
        follow = self._spec.follow_symlinks
        quick = not (follow and self._roots)  # links need no check against the roots
        suffixes = self._suffixes
        found: list[_Stat] = []
        add = found.append
        complete = True
        try:
            device = folder.dev = os.fstat(folder.fd).st_dev
            with os.scandir(folder.fd) as listing:
                # In chunks, so that a huge folder is compared (and reported) as it goes.
                while True:
                    read = 0
                    for entry in itertools.islice(listing, COMPARE_CHUNK):
                        read += 1
                        name = entry.name
                        if quick:
                            try:
                                if name[name.rfind(".") :].lower() in suffixes:
                                    if entry.is_file(follow_symlinks=follow):
                                        info = entry.stat(follow_symlinks=follow)
                                        add((name, info.st_size, info.st_mtime_ns, info.st_dev))
                                        continue
                                elif not entry.is_dir(follow_symlinks=follow):
                                    continue  # neither a folder nor a video
                            except OSError:
                                pass  # _visit reports it
                        item = self._visit(entry, folder)
                        if item is None:
                            continue
                        if isinstance(item, WalkError):
                            complete = complete and item.complete
                            if not self._outbox.error(item):
                                return False
                        else:
                            add((name, item.st_size, item.st_mtime_ns, item.st_dev))
                    if read < COMPARE_CHUNK:  # the end of the folder
                        break
                    if not self._compare(folder, found):
                        return False
                    found = []
                    add = found.append
        except OSError as exc:
            self._outbox.errors.append(folder_error(folder.path, exc))
        else:
            if complete:
                self.listed[folder.path] = device
                if self._targets is not None:
                    self._targets.listed_target(folder.path)
        return self._compare(folder, found)  # what was read, even if the listing then failed

    def _compare(self, folder: _Folder, found: list[_Stat]) -> bool:
        """Look up files of `folder` in the index: count the unchanged ones, open the others
        for probing; False when the scan is over."""
        prefix = folder.prefix
        take = self.index.keys.pop
        compare = not self._spec.full
        verify = compare and self._spec.decode
        undated = self.index.undated
        # Paths met need keeping only if the library has videos here that could be removed.
        met = self.met if self.index.keys else None
        unchanged = unchanged_bytes = 0
        last = ""
        for name, size, mtime_ns, dev in found:
            moved_from = ""
            # library_key(path, size, mtime), inline: the index holds it if the file is
            # unchanged (True if its health is known)
            verified = take(f"{prefix}{name}/{size}/{mtime_ns}", None)
            if verified is not None:
                if compare and (verified or not verify):  # else: verify it
                    unchanged += 1
                    unchanged_bytes += size
                    last = name
                    if undated and prefix + name in undated:  # stored without its device
                        self._outbox.undated.append((dev, prefix + name))
                    continue
            elif not encodes(prefix + name):  # never in the library: its paths are UTF-8
                if not self._outbox.error(not_utf8(prefix + name)):
                    return False
                continue
            elif self._counted is not None and self._counted(prefix + name, size, mtime_ns):
                continue
            elif met is not None:
                met.add(prefix + name)
                if compare:
                    moved_from = self._moves.candidate(size, mtime_ns, self.index.keys)
            if not self._open_file(folder, name, moved_from, verify_only=verified is not None):
                return False
        if unchanged:
            self._outbox.tally(unchanged, unchanged_bytes, prefix + last)
        return self._outbox.send_if_due()

    def _open_file(
        self, folder: _Folder, name: str, moved_from: str = "", *, verify_only: bool = False
    ) -> bool:
        """Open a file to probe relative to its folder and keep it for the next hand-over, or
        report why it cannot be probed; False when the scan is over."""
        if not self._open.reserve(self._stop, wait=False):
            # Every descriptor of the scan is taken: hand over what is held, so that probes
            # can go on and close theirs, and wait for some.
            if self._outbox.files and not self._outbox.send():
                return False
            if not self._open.reserve(self._stop, wait=True):
                return False
        path = folder.prefix + name
        follow = self._spec.follow_symlinks
        try:
            fd = os.open(name, _FILE_FLAGS | nofollow(follow), dir_fd=folder.fd)
        except OSError as exc:
            self._open.release()
            return self._outbox.error(file_error(path, exc, follow=follow))
        try:
            info = os.fstat(fd)
            problem = not_regular(path, info.st_mode)
            if problem is None and follow and self._roots and not self._roots.holds(fd):
                problem = outside_roots(path)
        except OSError as exc:
            problem = file_error(path, exc, follow=follow)
        if problem is not None:
            os.close(fd)
            self._open.release()
            return self._outbox.error(problem)
        if not self._open.add(fd):
            return False
        verify_only = verify_only and not self._spec.full
        return self._outbox.file(
            FoundFile(
                path,
                info.st_size,
                info.st_mtime_ns,
                info.st_dev,
                fd,
                moved_from,
                verify_only,
                max(info.st_mtime_ns, info.st_ctime_ns),
            )
        )

    def _visit(self, entry: os.DirEntry[str], folder: _Folder) -> os.stat_result | WalkError | None:
        """One folder entry: descend (None), a video file (its stat), a reported oddity, or
        None (not ours). A link is followed only when the scan asks for it, and then what it
        leads to is checked when it is opened (`_open_folder`, `_open_file`)."""
        follow = self._spec.follow_symlinks
        path = folder.prefix + entry.name
        try:
            if entry.is_dir(follow_symlinks=follow):
                return self._enter(entry, folder)
            if not is_video_name(entry.name, self._suffixes):
                return None
            if entry.is_file(follow_symlinks=follow):
                return entry.stat(follow_symlinks=follow)
            if entry.is_symlink() and not follow:
                return None  # links are followed only when the scan asks for it
            mode = entry.stat(follow_symlinks=follow).st_mode
            return WalkError(path, Code.FAILED_PRECONDITION, kind_of(mode), complete=True)
        except OSError as exc:
            if not is_video_name(entry.name, self._suffixes):
                return None
            if exc.errno == errno.ELOOP:
                return WalkError(
                    path, Code.FAILED_PRECONDITION, "a symbolic link loop", complete=True
                )
            if follow and isinstance(exc, FileNotFoundError) and entry.is_symlink():
                return WalkError(
                    path,
                    Code.FAILED_PRECONDITION,
                    "a dangling symbolic link: its target does not exist",
                    complete=True,
                )
            return WalkError(path, Code.NOT_FOUND, f"cannot stat: {exc.strerror}")

    def _enter(self, entry: os.DirEntry[str], folder: _Folder) -> WalkError | None:
        targets = self._targets
        if targets is not None:
            if not targets.in_tree(folder.path):
                targets.met_subfolder(folder.path, entry.name)
            if not targets.enters(folder.prefix + entry.name):
                return None
        elif not self._spec.recursive:
            return None
        folder.users += 1
        self._stack.append((folder, entry.name))
        return None


class Outbox:
    """What the walker holds for its next hand-over (`Batch`) to the scan, and when to send it:
    once WALK_BATCH files or errors are held, or enough was counted or time went by."""

    def __init__(self, hand_over: Callable[[Item], bool]) -> None:
        self._hand_over = hand_over
        self.files: list[FoundFile] = []
        self.errors: list[WalkError] = []
        self.undated: list[tuple[int, str]] = []
        self._unchanged = 0
        self._unchanged_bytes = 0
        self._last_unchanged = ""
        self._handed_at = time.monotonic()

    def holds(self) -> bool:
        return bool(self.files or self.errors or self._unchanged or self._unchanged_bytes)

    def file(self, found: FoundFile) -> bool:
        """Hold a file to probe; False when the scan is over."""
        self.files.append(found)
        return len(self.files) < WALK_BATCH or self.send()

    def error(self, error: WalkError) -> bool:
        self.errors.append(error)
        return len(self.errors) < WALK_BATCH or self.send()

    def tally(self, unchanged: int, unchanged_bytes: int, last: str) -> None:
        """Count unchanged files; `last`: the path of the newest of them."""
        self._unchanged += unchanged
        self._unchanged_bytes += unchanged_bytes
        self._last_unchanged = last

    def send_if_due(self) -> bool:
        """Hand over what is held if enough was counted or enough time went by since the last
        hand-over, so that progress moves during a long unchanged walk and probing starts
        early; False when the scan is over."""
        if not self.holds():
            return True
        if (
            self._unchanged >= TALLY_BATCH
            or time.monotonic() - self._handed_at >= HAND_OVER_INTERVAL
        ):
            return self.send()
        return True

    def send(self) -> bool:
        batch = Batch(
            self.files,
            self.errors,
            self._unchanged,
            self._unchanged_bytes,
            self._last_unchanged,
            self.undated,
        )
        self.files, self.errors, self.undated = [], [], []
        self._unchanged = self._unchanged_bytes = 0
        ok = self._hand_over(batch)
        self._handed_at = time.monotonic()
        return ok

    def end(self) -> None:
        """Tell the scan the walk is over (None)."""
        self._hand_over(None)


def missing_videos(
    index: LibraryIndex, listed: dict[str, int], met: set[str], spec: ScanSpec
) -> list[tuple[str, int]]:
    """The videos of the index a complete walk did not meet, that may be removed, with the device
    of their folder: only those whose own folder was listed without an error (an unreadable or
    vanished folder wipes nothing), directly in the scanned folder unless the scan is
    recursive. The delete also checks, in SQL against the row as it is then, that the row's
    device is its folder's (an unmounted disk leaves its mount point, an empty folder on another
    device: that wipes nothing) and that the row was written before the scan began (an
    overlapping scan may have just added or rewritten it)."""
    missing = []
    for key in index.keys:  # the videos the walk did not find unchanged
        path = library_key_path(key)
        folder = os.path.dirname(path)
        listed_on = listed.get(folder)
        if listed_on is not None and path not in met and (spec.recursive or folder == spec.path):
            missing.append((path, listed_on))
    return missing
