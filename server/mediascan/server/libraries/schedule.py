"""A library's rescan schedule, run by its keeper: `run_schedule` says when a scheduled rescan
is due (and whether it is a full one), and keeps the next due time in the library's status, so
that a run missed while no server held the library runs once when one does, not once per
missed interval."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from mediascan.v1 import scan_pb2

from ..store.changes import LibraryCatalog
from . import status as st
from .settings import PREFIX, seconds


async def run_schedule(
    library: scan_pb2.Library, catalog: LibraryCatalog, due: Callable[[bool], None]
) -> None:
    """Call `due(full)` at each scheduled rescan of `library`, until cancelled (at once if the
    library has no schedule)."""
    library_id = library.name.removeprefix(PREFIX)
    interval_ns = round(seconds(library, "rescan_interval") * 1e9)
    if not interval_ns:
        return
    while True:
        fresh = await catalog.get_library(library_id)
        if fresh is None:
            return  # deleted: its keeper ends on its own
        status = fresh.status
        due_ns = time.time_ns() + interval_ns
        if status.HasField("next_rescan_time"):
            due_ns = min(due_ns, status.next_rescan_time.ToNanoseconds())
        else:
            edit = st.next_rescan(due_ns, status.scheduled_runs)
            await st.update_status(catalog, library_id, edit)
        wait = (due_ns - time.time_ns()) / 1e9
        if wait > 0:
            await asyncio.sleep(wait)
        runs = status.scheduled_runs + 1
        every = library.full_rescan_every
        due(bool(every) and runs % every == 0)
        edit = st.next_rescan(time.time_ns() + interval_ns, runs)
        await st.update_status(catalog, library_id, edit)
