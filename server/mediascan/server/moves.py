"""Files moved or renamed inside a scanned folder: found again, not probed again.

A moved file is a new path (not in the library's index) whose size and modification time are
those of a video of the index that the walk has not met (yet), and whose fingerprint is that
video's. The walker finds the candidate (`MoveIndex`: a map from size and time to the index's
keys, built on the first new file of a scan, never for an unchanged tree) and hands the file
over with the old path. The scan asks a prober for the new file's fingerprint (two reads of
64 KiB), compares it with the stored row (`Moves.match`), and when they agree the file is not
probed: its row is known. At the end of a complete walk (`Moves.finish`), each held file takes a
row of that content whose path the walk did not meet (one of the same file name first, so that
identical files are told apart by name where they can be): the row takes the new path and keeps
its `video_id` (counted `moved`, not removed nor added). A held file left without such a row is
a copy: it gets a row of its own with the metadata of its content (counted `added`). Held files
are at most `MAX_PENDING` per scan (about 300 bytes each); past it, candidates are probed as new
files.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from .probe import ProbeError
from .store import Fence, LibraryStore, MovedVideo, VideoRow, library_key_path

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
        code = hash(stat[1:])
        found = self._by_stat.get(code)
        if isinstance(found, list):  # several videos alike: drop those met since, from the end
            while found and found[-1] not in keys:
                found.pop()
            found = found[-1] if found else None
        if found is None or not found.endswith(stat) or found not in keys:
            return ""
        return library_key_path(found)


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


#: Paths of `missing` whose rows `Moves.finish` reads at once.
_CHUNK = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class _Held:
    path: str
    dev: int
    row: VideoRow  #: a stored row with the file's content (size, time and fingerprint)


def _content(row: VideoRow) -> tuple[int, int, str]:
    return row.size_bytes, row.mtime_ns, row.fingerprint


def _take(candidates: list[tuple[str, int]] | None, path: str) -> tuple[str, int] | None:
    """Take from `candidates` (gone paths with their folder's device) one with the file name
    of `path`, else the first; None if there is none."""
    if not candidates:
        return None
    name = path.rsplit("/", 1)[-1]
    for index, candidate in enumerate(candidates):
        if candidate[0].rsplit("/", 1)[-1] == name:
            return candidates.pop(index)
    return candidates.pop(0)


@dataclasses.dataclass(frozen=True, kw_only=True)
class MoveOutcome:
    moved: int
    #: Rows for the copies of videos (a new path whose old one is still there), to add.
    copies: list[VideoRow]
    #: The videos still to remove: those the walk did not meet and that did not move.
    missing: list[tuple[str, int]]


class Moves:
    """One scan's moved files: matched as they come (`match`), settled at the end (`finish`)."""

    def __init__(self, store: LibraryStore, fingerprint: Fingerprinter, fence: Fence) -> None:
        self._store = store
        self._fence = fence  #: the scan's attempt: a shared store refuses moves of another
        self._fingerprint = fingerprint
        self._job_id = fence.job_id
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
        """Move held files onto the rows of `missing` (path, device of its folder) that have
        their size, time and fingerprint: the old path is chosen here, once the walk knows
        which are gone (among files alike, one of the same name first); the other held files
        become copies."""
        held, self._held = self._held, []
        gone = await self._alike(held, missing)
        moving: list[_Held] = []
        moves: list[MovedVideo] = []
        copies: list[_Held] = []
        for one in held:
            old = _take(gone.get(_content(one.row)), one.path)
            if old is None:
                copies.append(one)
                continue
            moving.append(one)
            moves.append(
                MovedVideo(
                    old_path=old[0],
                    new_path=one.path,
                    size_bytes=one.row.size_bytes,
                    mtime_ns=one.row.mtime_ns,
                    fingerprint=one.row.fingerprint,
                    dev=one.dev,
                    folder_dev=old[1],
                )
            )
        done = (
            await self._store.move_videos(moves, before_ns=before_ns, fence=self._fence)
            if moves
            else []
        )
        moved = {move.old_path for move, ok in zip(moves, done, strict=True) if ok}
        # A row that changed meanwhile stays; its new file gets a row of its own.
        copies.extend(one for one, ok in zip(moving, done, strict=True) if not ok)
        return MoveOutcome(
            moved=len(moved),
            copies=[self._copy(one) for one in copies],
            missing=[(path, dev) for path, dev in missing if path not in moved],
        )

    async def _alike(
        self, held: list[_Held], missing: Sequence[tuple[str, int]]
    ) -> dict[tuple[int, int, str], list[tuple[str, int]]]:
        """The rows of `missing` with the content of a held file, by content: read from the
        store a chunk at a time, only when files are held."""
        wanted = {_content(one.row) for one in held}
        alike: dict[tuple[int, int, str], list[tuple[str, int]]] = {}
        for start in range(0, len(missing) if wanted else 0, _CHUNK):
            chunk = dict(missing[start : start + _CHUNK])
            for path, row in (await self._store.video_rows(list(chunk))).items():
                if (content := _content(row)) in wanted:
                    alike.setdefault(content, []).append((path, chunk[path]))
        return alike

    def _copy(self, held: _Held) -> VideoRow:
        return dataclasses.replace(
            held.row, path=held.path, dev=held.dev, probe_ns=time.time_ns(), job_id=self._job_id
        )
