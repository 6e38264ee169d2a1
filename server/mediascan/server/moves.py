"""Files moved or renamed inside a scanned folder: found again, not probed again.

A moved file is a new path (not in the library's index) whose size and modification time are
those of a video of the index that the walk has not met (yet), and whose fingerprint is that
video's. The walker finds the candidate (`MoveIndex`: a map from size and time to the index's
keys, built on the first new file of a scan, never for an unchanged tree) and hands the file
over with the old path. The scan asks a prober for the new file's fingerprint (two reads of
64 KiB), compares it with the stored row (`Moves.match`), and when they agree the file is not
probed: its row is known. At the end of a complete walk (`Moves.finish`), a held file whose old
path the walk did not meet is a move: the row takes the new path and keeps its `video_id`
(counted `moved`, not removed nor added). One whose old path is still there is a copy: it gets a
row of its own with the old one's metadata (counted `added`). Held files are at most
`MAX_PENDING` per scan (about 300 bytes each); past it, candidates are probed as new files.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from .probe import ProbeError
from .store import LibraryStore, MovedVideo, VideoRow, library_key_path

if TYPE_CHECKING:
    from .walker import FoundFile

#: Candidate files a scan holds until the end of its walk, at most.
MAX_PENDING = 100_000
#: Largest index (videos) for which a scan builds its MoveIndex (about 70 bytes a video).
MAX_INDEXED = 4_000_000

Fingerprinter = Callable[[int, str], Awaitable[str]]


class MoveIndex:
    """For the walker: which video of the index a new file may be, by size and time. Built
    from the index's keys (`path/size/mtime`) the first time it is asked, holding the keys
    themselves (no copies of the strings) under the hash of their `size/mtime` part."""

    def __init__(self) -> None:
        self._by_stat: dict[int, str | list[str]] | None = None

    def candidate(self, size: int, mtime_ns: int, keys: dict[str, bool]) -> str:
        """The path of a video of `keys` (the index as the walk left it: the videos not met
        yet) with this size and time; "" if none."""
        if self._by_stat is None:
            self._by_stat = _by_stat(keys) if len(keys) <= MAX_INDEXED else {}
        stat = f"/{size}/{mtime_ns}"
        found = self._by_stat.get(hash(stat[1:]))
        if found is None:
            return ""
        for key in [found] if isinstance(found, str) else found:
            if key.endswith(stat) and key in keys:
                return library_key_path(key)
        return ""


def _by_stat(keys: dict[str, bool]) -> dict[int, str | list[str]]:
    by_stat: dict[int, str | list[str]] = {}
    for key in keys:
        cut = key.rfind("/", 0, key.rfind("/"))
        code = hash(key[cut + 1 :])
        held = by_stat.get(code)
        if held is None:
            by_stat[code] = key
        elif isinstance(held, str):
            by_stat[code] = [held, key]
        else:
            held.append(key)
    return by_stat


@dataclasses.dataclass(frozen=True, slots=True)
class _Held:
    path: str
    dev: int
    row: VideoRow  #: the stored row of the old path


@dataclasses.dataclass(frozen=True, kw_only=True)
class MoveOutcome:
    moved: int
    #: Rows for the copies of videos (a new path whose old one is still there), to add.
    copies: list[VideoRow]
    #: The videos still to remove: those the walk did not meet and that did not move.
    missing: list[tuple[str, int]]


class Moves:
    """One scan's moved files: matched as they come (`match`), settled at the end (`finish`)."""

    def __init__(self, store: LibraryStore, fingerprint: Fingerprinter, job_id: str) -> None:
        self._store = store
        self._fingerprint = fingerprint
        self._job_id = job_id
        self._held: list[_Held] = []

    async def match(self, found: FoundFile) -> bool:
        """True when `found` (handed over with the old path it may have moved from) has the
        content of the row stored there: it is then held, not probed. False: probe it."""
        if not found.moved_from or len(self._held) >= MAX_PENDING:
            return False
        try:
            fingerprint = await self._fingerprint(found.fd, found.path)
        except ProbeError:
            return False  # the probe will say what is wrong with it
        row = (await self._store.video_rows([found.moved_from])).get(found.moved_from)
        if (
            row is None
            or not row.fingerprint
            or (row.fingerprint, row.size_bytes, row.mtime_ns)
            != (fingerprint, found.size, found.mtime_ns)
        ):
            return False
        self._held.append(_Held(found.path, found.dev, row))
        return True

    async def finish(self, missing: Sequence[tuple[str, int]], *, before_ns: int) -> MoveOutcome:
        """Move the rows of held files whose old path is among `missing` (path, device of its
        folder), the first held file of each; the others become copies."""
        gone = dict(missing)
        moving: list[_Held] = []
        moves: list[MovedVideo] = []
        copies: list[_Held] = []
        for held in self._held:
            folder_dev = gone.pop(held.row.path, None)
            if folder_dev is None:
                copies.append(held)
                continue
            moving.append(held)
            moves.append(
                MovedVideo(
                    old_path=held.row.path,
                    new_path=held.path,
                    size_bytes=held.row.size_bytes,
                    mtime_ns=held.row.mtime_ns,
                    fingerprint=held.row.fingerprint,
                    dev=held.dev,
                    folder_dev=folder_dev,
                )
            )
        self._held = []
        done = await self._store.move_videos(moves, before_ns=before_ns) if moves else []
        moved = {move.old_path for move, ok in zip(moves, done, strict=True) if ok}
        # A row that changed meanwhile stays; its new file gets a row of its own.
        copies.extend(held for held, ok in zip(moving, done, strict=True) if not ok)
        return MoveOutcome(
            moved=len(moved),
            copies=[self._copy(held) for held in copies],
            missing=[(path, dev) for path, dev in missing if path not in moved],
        )

    def _copy(self, held: _Held) -> VideoRow:
        return dataclasses.replace(
            held.row, path=held.path, dev=held.dev, probe_ns=time.time_ns(), job_id=self._job_id
        )
