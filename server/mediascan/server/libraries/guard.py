"""What a scan does differently under a library: the parts of a targeted rescan, the removal
of a folder that is gone, and the removal limit (a scan never removes more than a library's
`removal_limit` share of its videos at once without `force`; the library turns DEGRADED)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from typing import Protocol

from mediascan.v1 import scan_pb2

from ..jobs import ScanSpec
from ..store import LibraryStore
from ..store.changes import LibraryCatalog

log = logging.getLogger(__name__)

#: The start of the reason of a library DEGRADED by withheld removals.
WITHHELD = "removals withheld"


class Withholding(Protocol):
    progress: scan_pb2.Progress

    def withhold(self, count: int) -> None: ...

    def changed(self) -> None: ...


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
