"""Changes to a library's stored status (through `LibraryCatalog.update_library`): a change of
state, reason or watching mode is recorded in the library's feed (STATUS), and so is a keeper's
start, announced; the bookkeeping (last job, next rescan, marker) is stored without a change."""

from __future__ import annotations

from collections.abc import Callable

from google.protobuf import timestamp_pb2

from mediascan.v1 import scan_pb2

from ..store.changes import LibraryCatalog

#: In the reason of a library DEGRADED because some of its folders have no watch.
BLIND = "cannot be watched"

Edit = Callable[[scan_pb2.LibraryStatus], None]


async def update_status(
    catalog: LibraryCatalog, library_id: str, edit: Edit, *, announce: bool = False
) -> bool:
    """Apply `edit` to the stored status; True when the library exists. `announce`: record a
    STATUS change even if state, reason and watching stay as they were."""

    def change(library: scan_pb2.Library) -> bool:
        status = library.status
        before = (status.state, status.reason, status.watching)
        edit(status)
        after = (status.state, status.reason, status.watching)
        if after[0] != before[0]:
            status.since.GetCurrentTime()
        return announce or after != before

    return await catalog.update_library(library_id, change) is not None


def set_state(state: int, reason: str = "", *, watching: int | None = None) -> Edit:
    def edit(status: scan_pb2.LibraryStatus) -> None:
        status.state = state  # type: ignore[assignment]
        status.reason = reason
        if watching is not None:
            status.watching = watching  # type: ignore[assignment]

    return edit


def kept(
    status: scan_pb2.LibraryStatus, watching: int, problem: str, still_blind: bool, announce: bool
) -> tuple[int, str, bool] | None:
    """What a keeper that has begun watching says (state, reason, announce), or None: DEGRADED
    for `problem` (it cannot watch); ACTIVE if the library was OFFLINE, watched otherwise, or
    DEGRADED for blind folders (as an earlier keeper found them) that are watched now;
    else the state as it was, announced (a STATUS change even when nothing else changed, e.g.
    at another server after a takeover) unless `announce` is false (nothing is watched)."""
    degraded = status.state == scan_pb2.LIBRARY_STATE_DEGRADED
    if problem:
        return scan_pb2.LIBRARY_STATE_DEGRADED, problem, announce
    if (
        status.state == scan_pb2.LIBRARY_STATE_OFFLINE
        or status.watching != watching
        or (degraded and BLIND in status.reason and not still_blind)
    ):
        return scan_pb2.LIBRARY_STATE_ACTIVE, "", False
    if announce:
        return status.state, status.reason, True
    return None


def job_ended(job: scan_pb2.Job) -> Edit:
    def edit(status: scan_pb2.LibraryStatus) -> None:
        status.last_job_id = job.job_id
        status.last_scan_end_time.CopyFrom(job.end_time)

    return edit


def next_rescan(at_ns: int, runs: int) -> Edit:
    def edit(status: scan_pb2.LibraryStatus) -> None:
        status.next_rescan_time.CopyFrom(_timestamp(at_ns))
        status.scheduled_runs = runs

    return edit


def marked(status: scan_pb2.LibraryStatus) -> None:
    status.marker = True


def _timestamp(ns: int) -> timestamp_pb2.Timestamp:
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(ns)
    return stamp
