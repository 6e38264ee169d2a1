"""What a scan does differently under a library: the parts of a targeted rescan, the removal
of a folder that is gone, and the removal limit (a scan never removes more than a library's
`removal_limit` share of its videos at once without `force`; the library turns DEGRADED)."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import time
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from mediascan.v1 import scan_pb2

from ..jobs import ScanSpec
from ..store import Fence, LibraryStore
from ..store.changes import LibraryCatalog
from ..store.protocol import library_key_path

log = logging.getLogger(__name__)

#: The start of the reason of a library DEGRADED by withheld removals.
WITHHELD = "removals withheld"


class Withholding(Protocol):
    progress: scan_pb2.Progress

    def withhold(self, count: int) -> None: ...

    def changed(self) -> None: ...


def targeted_parts(spec: ScanSpec) -> list[ScanSpec]:
    """The scans a targeted rescan is made of: each tree walked whole, then each folder's own
    files (those inside a tree are left out: the tree's walk covers them)."""
    trees = sorted(set(spec.trees))
    parts = [_part(spec, tree, recursive=True) for tree in trees]
    for folder in sorted(set(spec.folders)):
        if not any(folder == t or folder.startswith(t.rstrip("/") + "/") for t in trees):
            parts.append(_part(spec, folder, recursive=False))
    return parts


def _part(spec: ScanSpec, path: str, *, recursive: bool) -> ScanSpec:
    return dataclasses.replace(spec, path=path, recursive=recursive, folders=(), trees=())


async def remove_gone_tree(
    store: LibraryStore, part: ScanSpec, fence: Fence, reporter: Withholding
) -> None:
    """A tree of a targeted rescan that no longer exists: its videos are removed, if its
    parent folder is still there (a gone parent is the parent's own part, or the library's
    root going offline: nothing is removed)."""
    parent = os.path.dirname(part.path)
    try:
        dev = os.stat(parent).st_dev
    except OSError:
        return
    index = await store.library_index(part.path, recursive=True)
    missing = [(library_key_path(key), dev) for key in index.keys]
    if not missing:
        return
    if not part.force:
        missing = await within_removal_limits(store, missing, part, reporter)
    if missing:
        removed = await store.remove_videos(missing, before_ns=time.time_ns(), fence=fence)
        reporter.progress.removed += removed
        reporter.changed()


async def remove_gone_subfolders(
    store: LibraryStore, part: ScanSpec, fence: Fence, reporter: Withholding
) -> None:
    """After a targeted rescan of a folder's own files: the videos of its subfolders that are
    gone (a watch reports a deleted or moved-out folder as a change of its parent)."""
    index = await store.library_index(part.path, recursive=True)
    prefix = part.path.rstrip("/") + "/"
    subfolders = {
        prefix + rest.split("/", 1)[0]
        for rest in (library_key_path(key)[len(prefix) :] for key in index.keys)
        if "/" in rest
    }
    for folder in sorted(subfolders):
        if not await asyncio.to_thread(os.path.lexists, folder):
            gone = dataclasses.replace(part, path=folder, recursive=True)
            await remove_gone_tree(store, gone, fence, reporter)


async def within_removal_limits(
    store: LibraryStore,
    missing: Sequence[tuple[str, int]],
    spec: ScanSpec,
    reporter: Withholding,
) -> list[tuple[str, int]]:
    """The removals that keep each library within its removal limit; those of a library they
    would take beyond it are withheld (counted, and the library marked DEGRADED)."""
    if not isinstance(store, LibraryCatalog):
        return list(missing)
    roots = await store.library_roots()
    if not roots:
        return list(missing)
    per_library = Counter(roots.library_of(path) for path, _ in missing)
    refused: set[str] = set()
    for library_id, count in per_library.items():
        if library_id is None:
            continue
        library = await store.get_library(library_id)
        if library is None or library.removal_limit >= 1:
            continue
        if count > library.removal_limit * max(library.status.video_count, 1):
            refused.add(library_id)
            await _degrade(store, library, count, spec)
    if not refused:
        return list(missing)
    kept = [(path, dev) for path, dev in missing if roots.library_of(path) not in refused]
    reporter.withhold(len(missing) - len(kept))
    reporter.changed()
    return kept


async def _degrade(
    store: LibraryCatalog, library: scan_pb2.Library, count: int, spec: ScanSpec
) -> None:
    share = library.removal_limit
    reason = (
        f"{WITHHELD}: a scan of {spec.path} found {count} of the library's "
        f"{library.status.video_count} videos gone, more than its removal limit "
        f"({share:.0%}); nothing was removed. If the files are really gone, scan "
        f"{library.root} with force; if a disk or share is unmounted, mount it again"
    )
    log.warning("library %s: %s", library.name, reason)

    def change(stored: scan_pb2.Library) -> bool:
        status = stored.status
        status.state = scan_pb2.LIBRARY_STATE_DEGRADED
        status.reason = reason
        status.since.GetCurrentTime()
        return True

    await store.update_library(library.name.removeprefix("libraries/"), change)
