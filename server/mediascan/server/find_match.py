"""`FindMatch`: the comparison of GNU find's lines with the library's listing of a folder
(`LibraryListing`), for the find walk (`find_walk.py`).

Every step is a set operation in C, never a Python step per file: the listing comes in parts
while `find` runs, and each part of either is compared, as it comes, with what the other has
left unmatched so far. What is left over is what
the Python walk must look at (`Plan`): the folders of lines that name a video and match no key
(new or changed files), and the folders of keys no line matched (changed or gone videos)."""

from __future__ import annotations

import dataclasses
import itertools
import os

from .store import LibraryIndex, LibraryListing, library_key
from .store.protocol import stale_key
from .videonames import is_video_name
from .walker import Outbox

MAX_TARGETS = 1000  # folders left for the Python walk beyond which it walks everything


def time_text(mtime_ns: int) -> str:
    """A modification time as `find -printf %T@` writes it (for times from 1970 on)."""
    return f"{mtime_ns // 1_000_000_000}.{mtime_ns % 1_000_000_000:09d}0"


@dataclasses.dataclass(slots=True)
class Plan:
    """What `find` left to the Python walk: folders to list, trees to walk whole (folders
    `find` could not read), or everything."""

    folders: set[str] = dataclasses.field(default_factory=set)
    trees: set[str] = dataclasses.field(default_factory=set)
    everything: bool = False  #: walk the whole folder instead

    def add(self, folder: str, *, tree: bool = False) -> None:
        if not self.everything:
            (self.trees if tree else self.folders).add(folder)
            self.everything = len(self.folders) + len(self.trees) > MAX_TARGETS

    def __bool__(self) -> bool:
        """Whether anything is left to the Python walk."""
        return bool(self.folders or self.trees or self.everything)


class FindMatch:
    """`find`'s lines against the listing's keys, as either comes: each new line (or key) is
    looked up among the keys (lines) nothing matched yet; a match is counted (tallied) and
    leaves both sides. At the end, what is left plans the Python walk (`plan`)."""

    def __init__(self, prefix: str, suffixes: frozenset[str]) -> None:
        self._prefix = prefix  #: the scanned folder, ending with "/"
        self._suffixes = suffixes
        #: Lower-case extensions as bytes, to tell a video's line without decoding it.
        self._suffix_bytes = frozenset(suffix.encode() for suffix in suffixes if suffix.isascii())
        self._lines: set[bytes] = set()  #: the lines no key matched (yet)
        self._left: set[bytes] = set()  #: the keys no line matched (yet)
        self._parts: list[list[bytes]] = []  #: the listing's keys, part by part
        #: The relative paths of the videos counted in what the Python walk lists, once
        #: `counted` asks (bytes, as `find` wrote them).
        self._counted: set[bytes] | None = None
        self._key_count = 0
        self._keys_bytes = 0  #: the listing's `keys_bytes`, so far
        self._tallied_bytes = 0
        self.plan = Plan()

    def lines(self, lines: list[bytes], outbox: Outbox) -> None:
        """A read of `find`'s lines."""
        left = self._left
        unmatched = list(itertools.filterfalse(left.__contains__, lines))
        matched = len(lines) - len(unmatched)
        if matched:
            last = next(line for line in reversed(lines) if line in left)
            left.difference_update(lines)
            self._tally(matched, last, outbox)
        self._lines.update(unmatched)

    def keys(self, listing: LibraryListing, outbox: Outbox) -> None:
        """A part of the listing."""
        keys = listing.keys
        self._parts.append(keys)
        self._key_count += len(keys)
        self._keys_bytes += listing.keys_bytes
        lines = self._lines
        unmatched = list(itertools.filterfalse(lines.__contains__, keys))
        if len(unmatched) < len(keys):
            lines.difference_update(keys)
        self._left.update(unmatched)
        matched = len(keys) - len(unmatched)
        if matched:
            left = self._left
            self._tally(matched, next(key for key in reversed(keys) if key not in left), outbox)

    def _tally(self, matched: int, last: bytes, outbox: Outbox) -> None:
        """Count `matched` videos, their bytes from the listing's average size (made exact by
        `finish`); `last`: one of them, for `current_path`."""
        estimate = matched * self._keys_bytes // max(1, self._key_count)
        self._tallied_bytes += estimate
        outbox.tally(matched, estimate, self._prefix + _relative_path(last))

    def finish(self, outbox: Outbox) -> None:
        """After the last line and the last key: the exact size of what was counted, and the
        folders the Python walk must list."""
        plan = self.plan
        left_bytes = 0
        for key in self._left:
            left_bytes += int(key.rsplit(b"/", 2)[1])
            plan.add(os.path.dirname(self._prefix + _relative_path(key)))
        exact = self._keys_bytes - left_bytes
        if exact != self._tallied_bytes:
            outbox.tally(0, exact - self._tallied_bytes, "")
            self._tallied_bytes = exact
        for line in self._lines:
            if plan.everything:
                break
            if self._is_video(line):
                plan.add(os.path.dirname(self._prefix + _relative_path(line)))

    def _is_video(self, line: bytes) -> bool:
        """Whether the file of a line of `find` has a video's name (`is_video_name`)."""
        end = line.rfind(b"/", 0, line.rfind(b"/"))
        suffix = line[line.rfind(b".", 0, end) : end]
        if suffix.isascii():
            return b"/" not in suffix and suffix.lower() in self._suffix_bytes
        relative = _relative_path(line)
        return is_video_name(relative.rpartition("/")[2], self._suffixes)

    def left_index(self) -> LibraryIndex:
        """The index of the videos the Python walk compares: those no line matched."""
        keys: dict[str, bool] = {}
        undated: set[str] = set()
        for key in self._left:
            relative, size, when = key.rsplit(b"/", 2)
            path = self._prefix + relative.decode("utf-8", "surrogateescape")
            if when.startswith(b"u"):  # stored without a device
                undated.add(path)
                when = when[1:]
            keys[_library_key(path, int(size), when)] = False
        return LibraryIndex(keys, undated)

    def counted(self, path: str, size: int, mtime_ns: int) -> bool:
        """Whether `find` counted the file at `path` as an unchanged video (`Walker`'s
        `counted`), whatever it is now: a file that changed after `find` saw it unchanged was
        counted as it was then (as a change after the Python walk's `stat` would be), and is
        neither counted again nor probed."""
        if not path.startswith(self._prefix):
            return False
        if self._counted is None:
            self._counted = self._counted_paths()
        return path[len(self._prefix) :].encode("utf-8", "surrogateescape") in self._counted

    def _counted_paths(self) -> set[bytes]:
        """The relative paths of the keys a line matched, in the plan's folders (directly) and
        trees (at any depth), or in all of the folder: one pass over the keys."""
        plan, cut = self.plan, len(self._prefix)
        trees = tuple(path[cut:].encode("utf-8", "surrogateescape") + b"/" for path in plan.trees)
        folders = {path[cut:].encode("utf-8", "surrogateescape") for path in plan.folders}
        if plan.everything or b"/" in trees:  # a tree that is the folder itself
            trees = (b"",)
        starts = trees + tuple(folder + b"/" if folder else b"" for folder in folders)
        keys = itertools.chain.from_iterable(self._parts)
        left, found = self._left, set()
        for key in [key for key in keys if key.startswith(starts)]:  # few, but for the root
            if key in left:
                continue
            relative = key.rsplit(b"/", 2)[0]
            slash = relative.rfind(b"/")
            if (relative[:slash] if slash >= 0 else b"") in folders or relative.startswith(trees):
                found.add(relative)
        return found


def _relative_path(line: bytes) -> str:
    """The relative path of a line of `find` (or a key of the listing)."""
    return line.rsplit(b"/", 2)[0].decode("utf-8", "surrogateescape")


def _library_key(path: str, size: int, when: bytes) -> str:
    """The `library_key` of a video of the listing, from the time of its key there."""
    if when == b"s":  # read by an older prober, or not a video's name for this scan
        return stale_key(path)
    if b"." not in when:  # nanoseconds
        return library_key(path, size, int(when))
    seconds, _, fraction = when.partition(b".")
    return library_key(path, size, int(seconds) * 1_000_000_000 + int(fraction[:9]))
