"""`FolderWatcher`: a folder's changes, from inotify, as a few signals a scanner can act on.

It is pulled, not pushed: `next_signal()` (or `async for`) reads the kernel's events, keeps the
folders they touched (not the events: memory is one entry per pending folder) and returns a
`Changed` once folders have been quiet for the settle time. A user that does not pull leaves the
events in the kernel's queue, which overflows at worst: that is reported (`Overflowed`), never
lost. Other signals: `Blind`/`Sighted` for folders without a watch (the watch limit,
permissions) and when all are watched again, and `RootLost`, after which iteration ends.

asyncinotify adds and removes the watches and parses the kernel's records; this module waits for
the descriptor to be readable itself (a reader callback and an `asyncio.Event`) and then reads
what is there without blocking, instead of awaiting `Inotify.get()`: a timeout that cancels
`get()` just as a read completes would drop the events of that read. So `next_signal()` may be
cancelled (e.g. by `asyncio.timeout`) at any point and nothing is lost: its only awaits are that
wait and a walk of new folders (in a worker thread), whose result the next call takes in.
A step handles at most MOST_EVENTS_A_STEP events and then gives the loop a turn; while a backlog
is read that way (some of it may already sit in asyncinotify's buffer, where no readiness of the
descriptor announces it) nothing waits on the descriptor and no folder is taken as quiet.
One task pulls; `close()` may come from any task of the loop.

What inotify does not see, and so neither does this: changes that reach the files without
passing through this machine (network and FUSE file systems: `fstypes.py` decides to poll
them), a file system mounted on a folder below the root after the watch began (its folder's
watch stays on the folder it covers), and the root's own path changing because a folder above
it was renamed (the root's watch follows the folder, whose path is then stale).
"""

from __future__ import annotations

import asyncio
import errno
import os
from collections import deque
from typing import Literal

from asyncinotify import Event, Inotify, Mask

from .settle import QuietSet
from .signals import Blind, Overflowed, RootLost, Sighted, Signal
from .watches import WalkResult, WatchTable, watch_trees

#: Events read in one step before the loop gets a turn.
MOST_EVENTS_A_STEP = 4096
#: Full-size records (a 255-byte name) asyncinotify reads at once; short names fit many more.
READ_RECORDS = 64
#: Events on the root that end the watch, and the reason each gives.
ROOT_GONE = {
    Mask.UNMOUNT: "unmounted",
    Mask.DELETE_SELF: "deleted",
    Mask.MOVE_SELF: "moved",
    Mask.IGNORED: "watch removed",
}
WalkKind = Literal["start", "trees", "retry", "resync"]


class FolderWatcher:
    """Watches `root` (and, if `recursive`, every folder below it) until `close()` or the root
    is lost. `settle_s`: how long a folder must be quiet to be reported; `retry_s`: how often
    blind folders are tried again (also whenever a watch is freed). Use it as `async with
    FolderWatcher(...) as watcher: async for signal in watcher: ...`, or `start()`,
    `next_signal()` and `close()`."""

    def __init__(
        self,
        root: str,
        *,
        recursive: bool = True,
        follow_symlinks: bool = False,
        settle_s: float = 10.0,
        retry_s: float = 5.0,
    ) -> None:
        self.root = os.path.normpath(os.path.abspath(root))
        self.recursive = recursive
        self.follow_symlinks = follow_symlinks
        self.retry_s = retry_s
        self._quiet = QuietSet(self.root, settle_s)
        self._outbox: deque[Signal] = deque()
        self._readable = asyncio.Event()
        self._inotify: Inotify | None = None
        self._table: WatchTable | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._walking: tuple[WalkKind, asyncio.Task[WalkResult]] | None = None
        self._root_wd = -1
        self._to_walk: list[str] = []
        self._gone: set[str] = set()
        self._resync = False
        self._blind_reported: frozenset[str] = frozenset()
        self._blind_dirty = False
        self._freed = False
        self._next_retry = 0.0
        self._ended = False  # closed, or the root is lost: nothing more after the outbox
        self._backlog = False  # the last step stopped at MOST_EVENTS_A_STEP

    # -- life cycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Watch the root and the folders below it. Raises FileNotFoundError or
        NotADirectoryError if the root is not a folder, OSError if no inotify instance can be
        had (EMFILE: fs.inotify.max_user_instances)."""
        self._loop = asyncio.get_running_loop()
        try:
            self._inotify = Inotify(cache_size=READ_RECORDS, sync_timeout=0)
        except OSError as error:
            if error.errno == errno.EMFILE:
                raise OSError(error.errno, _INSTANCES) from error
            raise
        self._table = WatchTable(self._inotify)
        self._begin_walk("start", [self.root])
        await self._finish_walk()
        if self.root not in self._table and self.root not in self._table.blind:
            self.close()
            if not os.path.exists(self.root):
                raise FileNotFoundError(errno.ENOENT, "no such folder", self.root)
            raise NotADirectoryError(errno.ENOTDIR, "not a folder", self.root)

    def close(self) -> None:
        """Stop watching (idempotent); a pending or later `next_signal()` returns None."""
        self._ended = True
        self._outbox.clear()
        self._readable.set()  # wakes a next_signal() that waits
        inotify = self._inotify
        if inotify is None:
            return
        self._inotify = None
        if self._loop is not None and not self._loop.is_closed():
            self._loop.remove_reader(inotify.fd)
        if self._walking is None:
            inotify.close()
        else:  # a worker thread is adding watches with it: close once it is done
            self._walking[1].add_done_callback(lambda task: _close_after(task, inotify))

    async def __aenter__(self) -> FolderWatcher:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()

    def __aiter__(self) -> FolderWatcher:
        return self

    async def __anext__(self) -> Signal:
        signal = await self.next_signal()
        if signal is None:
            raise StopAsyncIteration
        return signal

    @property
    def watched(self) -> int:
        """How many folders have a watch."""
        return 0 if self._table is None else len(self._table)

    @property
    def blind(self) -> tuple[str, ...]:
        """The folders without a watch now (as the last `Blind` would list them)."""
        return () if self._table is None else tuple(sorted(self._table.blind))

    # -- the pull loop -------------------------------------------------------------------------

    async def next_signal(self) -> Signal | None:
        """The next signal, waiting as long as it takes; None once the watcher has ended."""
        while True:
            if self._walking is not None:
                await self._finish_walk()
                continue
            if self._outbox:
                return self._outbox.popleft()
            if self._ended or self._inotify is None or self._loop is None:
                return None
            if self._backlog:  # events already read may wait in asyncinotify: no fd wait
                await asyncio.sleep(0)  # the loop's turn between two steps of a backlog
            else:
                now = self._loop.time()
                changed = self._quiet.take_quiet(now)  # only once every event is read
                if changed is not None:
                    return changed
                if self._retry_due(now):
                    assert self._table is not None
                    self._begin_walk("retry", sorted(self._table.blind))
                    continue
                await self._wait_readable(self._inotify, self._loop)
            if not self._ended:
                self._backlog = self._drain(self._inotify, self._loop)

    def _retry_due(self, now: float) -> bool:
        """Blind folders are tried again every retry_s, and as soon as a watch is freed."""
        blind = self._table is not None and bool(self._table.blind)
        return blind and (self._freed or now >= self._next_retry)

    async def _wait_readable(self, inotify: Inotify, loop: asyncio.AbstractEventLoop) -> None:
        """Until the descriptor has events, the next quiet deadline or retry comes, or close()."""
        deadlines = [self._quiet.next_deadline()]
        if self._table is not None and self._table.blind:
            deadlines.append(self._next_retry)
        deadline = min((d for d in deadlines if d is not None), default=None)
        fd = inotify.fd
        self._readable.clear()
        loop.add_reader(fd, self._on_readable, loop, fd)
        try:
            async with asyncio.timeout_at(deadline):
                await self._readable.wait()
        except TimeoutError:
            pass
        finally:
            if self._inotify is inotify and not loop.is_closed():  # else close() has done it,
                loop.remove_reader(fd)  # and the number may belong to another file by now

    def _on_readable(self, loop: asyncio.AbstractEventLoop, fd: int) -> None:
        loop.remove_reader(fd)  # once: a user that does not pull leaves the loop idle
        self._readable.set()

    def _drain(self, inotify: Inotify, loop: asyncio.AbstractEventLoop) -> bool:
        """Handle the events there are, at most MOST_EVENTS_A_STEP, then what they call for.
        Whether there may be more (read already, or still in the kernel's queue)."""
        for _ in range(MOST_EVENTS_A_STEP):
            event = inotify.sync_get()
            if event is None:
                self._after_events()
                return False
            self._handle(event, loop.time())
            if self._ended:  # the root is lost: the watcher is closed
                return False
        self._after_events()
        return True

    # -- events --------------------------------------------------------------------------------

    def _handle(self, event: Event, now: float) -> None:
        mask = event.mask
        if Mask.Q_OVERFLOW in mask:
            self._overflowed()
            return
        watch, table = event.watch, self._table
        folder = None if watch is None or table is None else table.folders.get(watch.wd)
        if watch is None or table is None or folder is None:
            return  # a watch already dropped
        if watch.wd == self._root_wd and mask & (Mask.UNMOUNT | Mask.IGNORED | _SELF):
            self._lose_root(mask)
        elif Mask.IGNORED in mask:
            table.forget(watch.wd)
            self._freed = True
        elif Mask.UNMOUNT in mask:  # a file system below the root: what it covered shows
            self._to_walk.append(folder)
            self._quiet.touch(folder, now, tree=True)
        elif not mask & _SELF:
            self._quiet.touch(folder, now)
            if event.name is not None and self.recursive:
                self._entry_changed(os.path.join(folder, str(event.name)), mask, now)

    def _entry_changed(self, path: str, mask: Mask, now: float) -> None:
        """A name in a watched folder changed: a folder may have come or gone."""
        table = self._table
        assert table is not None
        if mask & (Mask.DELETE | Mask.MOVED_FROM):
            if Mask.ISDIR in mask or path in table or path in table.blind:
                self._gone.add(path)
        elif mask & (Mask.CREATE | Mask.MOVED_TO) and (
            Mask.ISDIR in mask or (self.follow_symlinks and os.path.isdir(path))
        ):
            self._to_walk.append(path)
            self._quiet.touch(path, now, tree=True)

    def _after_events(self) -> None:
        """Drop the watches of folders gone, then walk the folders that came."""
        table = self._table
        assert table is not None
        if self._gone:
            self._blind_dirty |= table.drop_below(self._gone)
            self._gone.clear()
            self._freed = True
        if self._resync:
            self._resync = False
            self._to_walk.clear()
            self._begin_walk("resync", [self.root])
        elif self._to_walk:
            tops, self._to_walk = self._to_walk, []
            self._begin_walk("trees", list(dict.fromkeys(tops)))
        self._report_blind()

    def _overflowed(self) -> None:
        """Events were lost: the user rescans all; the watches are made whole by a walk."""
        if not self._outbox or not isinstance(self._outbox[-1], Overflowed):
            self._outbox.append(Overflowed())
        self._quiet.clear()
        self._gone.clear()
        self._resync = True

    def _lose_root(self, mask: Mask) -> None:
        reason = next(text for flag, text in ROOT_GONE.items() if flag in mask)
        self.close()  # empties the outbox: what was pending is under a root that is gone
        self._outbox.append(RootLost(reason=reason))

    # -- walks ---------------------------------------------------------------------------------

    def _begin_walk(self, kind: WalkKind, tops: list[str]) -> None:
        assert self._inotify is not None and self._table is not None
        walk = asyncio.to_thread(
            watch_trees,
            self._inotify,
            tops,
            root=self.root,
            recursive=self.recursive,
            follow_symlinks=self.follow_symlinks,
            known=self._table.folders,
        )
        self._walking = (kind, asyncio.create_task(walk, name=f"watch-walk {self.root}"))

    async def _finish_walk(self) -> None:
        """Wait for the walk (a cancelled wait leaves it for the next call) and take it in."""
        assert self._walking is not None
        kind, task = self._walking
        result = await asyncio.shield(task)
        self._walking = None
        if self._ended or self._table is None or self._loop is None:
            return
        sighted, went_blind = self._table.record(result, whole=kind == "resync")
        self._blind_dirty |= bool(sighted) or went_blind or kind == "resync"
        self._root_wd = self._table.wd_of(self.root)
        now = self._loop.time()
        if kind == "retry":
            self._freed = False
            self._next_retry = now + self.retry_s
        elif went_blind and kind != "resync":
            self._next_retry = now + self.retry_s
        for folder in sighted:  # its poll may have missed a change just before the watch
            self._quiet.touch(folder, now, tree=True)
        self._report_blind()

    def _report_blind(self) -> None:
        """A Blind with the whole blind set when it changed, or Sighted when it emptied."""
        if not self._blind_dirty or self._table is None:
            return
        self._blind_dirty = False
        blind = frozenset(self._table.blind)
        if blind == self._blind_reported:
            return
        if blind:
            reason = self._table.blind_reason()
            self._outbox.append(Blind(folders=tuple(sorted(blind)), reason=reason))
        else:
            self._outbox.append(Sighted())
        self._blind_reported = blind


_SELF = Mask.DELETE_SELF | Mask.MOVE_SELF
_INSTANCES = (
    "cannot create an inotify instance: this user has as many as the kernel allows"
    " (fs.inotify.max_user_instances)"
)


def _close_after(task: asyncio.Task[WalkResult], inotify: Inotify) -> None:
    if not task.cancelled():
        task.exception()  # retrieved: a walk's own failure is not news once the watcher is shut
    inotify.close()
