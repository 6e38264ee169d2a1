"""A rescan of a large folder that lists it with GNU find (`FindWalk`), so that the files that did
not change are never looked at one by one in Python.

`find` lists every file below the scanned folder as `relative/path/size/seconds.nanoseconds0`,
and the library's videos below it come from the database in the same form (`LibraryListing`):
a line that is a key of the listing is an unchanged video. Sets compare them in C, a pipe's
read at a time (`find_match.py`); `find` runs in its own process while the database builds the
listing. What is left over decides what the Python walk (`walker.py`) still has to do:

- lines that match no key and name a video (by extension): new or changed files, whose folders
  the walk lists (anything else in them, a FIFO named like a video, is the walk's to report);
- keys no line matched: videos changed or gone, or named with none of the scan's extensions,
  whose folders the walk lists too;
- paths `find` could not read (its error lines name them): the walk goes through them whole
  (as trees) and reports the errors as a walk of everything would.

So the walk is a targeted rescan (`targets.py`) of those folders, with the keys no line matched
as its index, and it passes over a file that `find` counted (`counted`, by path). Unlike a
watch's targeted rescan, a target that is gone, or is now a file or a link, removes nothing and
is no error: as in a walk of everything, only the videos of folders listed completely are
removed (an unmounted disk keeps its videos). The walk opens every file it probes with its
usual rules (relative to its folder's descriptor, `O_NOFOLLOW`). `find` opens no file, starts
from the scan's own descriptor of the folder (`-H /proc/self/fd/N`: that link is followed, no
other) and only tells the scan which folders to look at. When more than MAX_TARGETS folders are
left, or `find` failed in a way its error lines do not explain, the walk covers the whole
folder, still passing over what `find` counted.

Only a whole, recursive, ordinary rescan of a folder with at least `--find-walk-min` videos in
the library goes this way (`eligible`), on a system with GNU find and /proc, and never when a
pseudo file system (`mounts.py`) is mounted below the folder (`usable`); the rest take the
Python walk.
"""

from __future__ import annotations

import codecs
import collections
import concurrent.futures
import dataclasses
import fcntl
import logging
import os
import re
import select
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from functools import cache

from .find_match import FindMatch, Plan
from .jobs import ScanSpec
from .mounts import PSEUDO_TYPES, parse_mountinfo, read_mountinfo
from .open_files import OpenFiles
from .roots import AllowedRoots
from .store import LibraryListing
from .videonames import VIDEO_SUFFIXES
from .walker import HAND_OVER_INTERVAL, Item, Outbox, Walker

log = logging.getLogger(__name__)

PIPE_SIZE = 4 << 20  # bytes of find's output its pipe holds (else /proc/sys/fs/pipe-max-size)
STDOUT_BUFFER = 256 << 10  # bytes find writes at a time (`stdbuf`)
READ_SIZE = 1 << 20  # bytes of find's output read (and compared) at a time
MAX_ERROR_OUTPUT = 1 << 20  # bytes of find's error lines read; past it, a walk of everything
#: find's line for a file that is neither a folder nor a link (those the walk passes over).
FIND_ARGS = ("!", "-type", "d", "!", "-type", "l", "-printf", "%P/%s/%T@\\0")
_ERROR_LINE = re.compile(rb"find: '((?:[^'\\]|\\.)*)': ")

Part = concurrent.futures.Future[LibraryListing]
LISTING_PART = 65_536  # videos per part of the listing
PARTS_AT_ONCE = 2  # parts of the listing the database reads at the same time


@dataclasses.dataclass(frozen=True, slots=True)
class ListingSource:
    """The listing of the scanned folder, read from the walker thread (each call gives a future
    the event loop completes): its bounds (`LibraryStore.library_bounds`), then its parts."""

    bounds: Callable[[], concurrent.futures.Future[list[str]]]
    #: The part from after a path ("": the first) up to a path ("": the last).
    part: Callable[[str, str], Part]


@cache
def gnu_find() -> str | None:
    """The path of GNU find (its -printf is what this needs), or None."""
    path = shutil.which("find")
    if path is None or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        version = subprocess.run(
            [path, "--version"], capture_output=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return path if b"GNU findutils" in version else None


def eligible(spec: ScanSpec) -> bool:
    """A scan the find walk can do: a whole, recursive rescan that neither follows links nor
    probes or verifies what did not change."""
    return spec.recursive and not (
        spec.follow_symlinks or spec.full or spec.decode or spec.folders or spec.trees
    )


def usable(folder: str) -> bool:
    """Whether the find walk can list `folder` here: GNU find and /proc are there, and no
    pseudo file system is mounted below it (the Python walk does not enter one). Blocks: run
    it in a thread."""
    return gnu_find() is not None and not pseudo_mount_below(folder)


def pseudo_mount_below(folder: str, mountinfo: str | None = None) -> str:
    """A pseudo file system mounted below `folder` (its mount point), or ""."""
    prefix = folder.rstrip("/") + "/"
    text = read_mountinfo() if mountinfo is None else mountinfo
    for point, fstype in parse_mountinfo(text).items():
        if fstype in PSEUDO_TYPES and point.startswith(prefix):
            return point
    return ""


class FindWalk:
    """The walk of a large rescan: `find` first, then a Python walk of what it left (see the
    module). Runs in a walker thread, like `Walker`, and ends the hand-over the same way."""

    def __init__(
        self,
        spec: ScanSpec,
        roots: AllowedRoots,
        hand_over: Callable[[Item], bool],
        stop: threading.Event,
        listing: ListingSource,
        *,
        root: Callable[[], int | None],
        files: OpenFiles,
        suffixes: frozenset[str] = VIDEO_SUFFIXES,
    ) -> None:
        self._spec = spec
        self._roots = roots
        self._hand_over = hand_over
        self._stop = stop
        self._listing = listing
        self._root = root
        self._files = files
        self._suffixes = suffixes
        self._prefix = spec.path.rstrip("/") + "/"
        #: Once the walk is over: (path, device of its folder) of the videos to remove.
        self.missing: list[tuple[str, int]] = []

    def run(self) -> None:
        """The walk, in the calling thread; the scan is told when it ends (None), however."""
        ended = False
        fd: int | None = None
        try:
            fd = self._root()
            if fd is None:
                return
            outbox = Outbox(self._hand_over)
            match = self._find(fd, outbox)
            if match is None:
                return
            plan = match.plan
            spec = self._spec
            if plan.everything:
                how = "everything"
            else:
                how = f"{len(plan.folders)} folders"
                if plan.trees:
                    how += f" and {len(plan.trees)} trees"
                folders, trees = tuple(sorted(plan.folders)), tuple(sorted(plan.trees))
                spec = dataclasses.replace(spec, folders=folders, trees=trees)
            log.debug("find walk of %s: then the Python walk of %s", spec.path, how)
            if (outbox.holds() and not outbox.send()) or not plan:
                return
            taken, fd = fd, None
            walker = Walker(
                spec,
                self._roots,
                self._hand_over,
                self._stop,
                match.left_index(),
                root=lambda: taken,
                files=self._files,
                suffixes=self._suffixes,
                counted=match.counted,
                gone_loses=False,
            )
            ended = True  # the walker tells the scan
            walker.run()
            self.missing = walker.missing
        except BaseException:
            if not ended:  # else the walker logged it
                log.exception("the find walk of %s died; its scan fails", self._spec.path)
            raise
        finally:
            if fd is not None:
                os.close(fd)
            if not ended and not self._stop.is_set():
                self._hand_over(None)

    def _find(self, fd: int, outbox: Outbox) -> FindMatch | None:
        """Run `find` on the folder `fd` and compare its lines with the listing as they come;
        None when the scan is over."""
        find = gnu_find()
        assert find is not None  # `usable`
        with tempfile.TemporaryFile() as errors:
            process = subprocess.Popen(
                [*_buffered(), find, "-H", f"/proc/self/fd/{fd}", *FIND_ARGS],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
                pass_fds=(fd,),
                env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            )
            output = process.stdout
            assert output is not None
            _widen(output.fileno())
            try:
                match = self._read(output.fileno(), outbox)
                # find has closed its output: it is ending (stopped early: killed below)
                status = process.wait() if match is not None else -1
            finally:
                if process.poll() is None:
                    process.kill()
                    process.wait()
                output.close()
            if match is None:
                return None
            if status != 0 or os.fstat(errors.fileno()).st_size:
                errors.seek(0)
                self._find_failed(fd, status, errors.read(MAX_ERROR_OUTPUT + 1), match.plan)
        return match

    def _read(self, pipe: int, outbox: Outbox) -> FindMatch | None:
        """Compare `find`'s lines (from `pipe`) with the listing's parts as either comes; None
        when the scan is over."""
        match = FindMatch(self._prefix, self._suffixes)
        parts = _Parts(self._listing)
        read: _Lines | None = _Lines()  # None once `find` ended
        readable = select.poll()  # not select(): the pipe's descriptor may be above 1023
        readable.register(pipe, select.POLLIN)
        try:
            while not self._stop.is_set():
                listing = parts.take(wait=read is None)
                if listing is not None:
                    match.keys(listing, outbox)
                elif read is not None and readable.poll(HAND_OVER_INTERVAL * 1000):
                    chunk = os.read(pipe, READ_SIZE)
                    if not chunk or read.add(chunk):
                        match.lines(read.take(), outbox)
                    if not chunk:
                        read = None
                if read is None and parts.over():
                    match.finish(outbox)
                    return match
                if not outbox.send_if_due():
                    return None
            return None
        finally:
            parts.cancel()

    def _find_failed(self, fd: int, status: int, output: bytes, plan: Plan) -> None:
        """`find` met errors: what its error lines name goes to the Python walk, a folder as a
        tree (`find` saw nothing below it), a file with its folder; if a line names nothing
        below the folder, the Python walk covers everything. Either reports the errors."""
        relatives = error_paths(output, f"/proc/self/fd/{fd}".encode())
        if relatives is None:
            log.info("find exited %d on %s: %r", status, self._spec.path, output[:300])
            plan.everything = True
            return
        for relative in relatives:
            path = self._prefix + os.fsdecode(relative)
            try:  # relative to the scan's descriptor of the folder, no link followed
                mode = os.stat(relative, dir_fd=fd, follow_symlinks=False).st_mode
            except OSError:
                mode = 0
            if stat.S_ISDIR(mode):
                plan.add(path, tree=True)
            else:
                plan.add(os.path.dirname(path), tree=True)


def error_paths(output: bytes, start: bytes) -> list[bytes] | None:
    """The paths, relative to `start`, that `find`'s error lines name (`find: 'PATH': why`, the
    path quoted as the C locale quotes it: `\\'`, `\\n`, octal bytes); None if a line names no
    path below `start`, or if there is more than MAX_ERROR_OUTPUT of them."""
    lines = output.splitlines()
    if len(output) > MAX_ERROR_OUTPUT or not lines:
        return None
    prefix = start + b"/"
    paths: list[bytes] = []
    for line in lines:
        found = _ERROR_LINE.match(line)
        if found is None:
            return None
        raw = codecs.escape_decode(found.group(1))[0]
        if not isinstance(raw, bytes) or not raw.startswith(prefix):
            return None
        paths.append(raw[len(prefix) :])
    return paths


class _Lines:
    """What was read of `find`'s output and not compared yet: complete lines are taken once a
    READ_SIZE of them is held or HAND_OVER_INTERVAL went by (`find` writes a few KiB at a time)."""

    def __init__(self) -> None:
        self._chunks: list[bytes] = []
        self._size = 0
        self._since = time.monotonic()

    def add(self, chunk: bytes) -> bool:
        """Hold `chunk`; True when it is time to take the lines."""
        self._chunks.append(chunk)
        self._size += len(chunk)
        return self._size >= READ_SIZE or time.monotonic() - self._since >= HAND_OVER_INTERVAL

    def take(self) -> list[bytes]:
        """The complete lines held (the start of a line whose end is still to come is kept)."""
        data = b"".join(self._chunks)
        end = data.rfind(b"\0")
        rest = data[end + 1 :]
        self._chunks = [rest] if rest else []
        self._size = len(rest)
        self._since = time.monotonic()
        return data[:end].split(b"\0") if end > 0 else []


@cache
def _buffered() -> tuple[str, ...]:
    """`stdbuf` with a large output buffer, if there is one: `find` then writes its lines
    STDOUT_BUFFER bytes at a time instead of 4 KiB (about a fifth of its CPU, and most of the
    walker thread's reads)."""
    stdbuf = shutil.which("stdbuf")
    return () if stdbuf is None else (stdbuf, "-o", str(STDOUT_BUFFER))


def _widen(pipe: int) -> None:
    """Give `find`'s pipe room for PIPE_SIZE bytes (else what the system allows), so that
    `find` goes on listing while the walker thread compares a part of the listing (64 KiB, the
    default, is about a millisecond of `find`'s output)."""
    for size in (PIPE_SIZE, _pipe_max_size()):
        try:
            fcntl.fcntl(pipe, fcntl.F_SETPIPE_SZ, size)
            return
        except OSError:
            continue


def _pipe_max_size() -> int:
    """What an unprivileged process may ask for (/proc/sys/fs/pipe-max-size)."""
    try:
        with open("/proc/sys/fs/pipe-max-size") as file:
            return int(file.read())
    except (OSError, ValueError):
        return 1 << 20


class _Parts:
    """The parts of the listing: asked for PARTS_AT_ONCE at a time once its bounds are known,
    and taken as each is done (the comparison does not depend on their order)."""

    def __init__(self, source: ListingSource) -> None:
        self._source = source
        self._bounds: concurrent.futures.Future[list[str]] | None = source.bounds()
        self._ranges: collections.deque[tuple[str, str]] = collections.deque()
        self._asked: list[Part] = []

    def take(self, *, wait: bool) -> LibraryListing | None:
        """A part the database has read (its error is raised), or None; with `wait`, waits a
        while (HAND_OVER_INTERVAL) for one."""
        if self._bounds is not None:
            if not (self._bounds.done() or wait):
                return None
            try:
                bounds = self._bounds.result(timeout=HAND_OVER_INTERVAL)
            except concurrent.futures.TimeoutError:
                return None
            self._bounds = None
            self._ranges.extend(zip(["", *bounds], [*bounds, ""], strict=True))
        while self._ranges and len(self._asked) < PARTS_AT_ONCE:
            self._asked.append(self._source.part(*self._ranges.popleft()))
        if not self._asked:
            return None
        done, _ = concurrent.futures.wait(
            self._asked,
            timeout=HAND_OVER_INTERVAL if wait else 0,
            return_when=concurrent.futures.FIRST_COMPLETED,
        )
        if not done:
            return None
        part = done.pop()
        self._asked.remove(part)
        return part.result()

    def over(self) -> bool:
        """Every part was taken."""
        return self._bounds is None and not self._ranges and not self._asked

    def cancel(self) -> None:
        for future in (self._bounds, *self._asked):
            if future is not None:
                future.cancel()
