"""`LibraryKeepers`: the keepers of the libraries this server holds. On SQLite the server holds
every library; on PostgreSQL each library is held by one server at a time, under a lease in the
database (`LibraryCatalog.lease_libraries`), and another takes it over when that server stops
renewing it. A keeper that fails is logged and started again after a pause."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from mediascan.v1 import scan_pb2

from ..jobs import is_terminal
from ..store import StorageError
from ..store.changes import LibraryCatalog
from . import status as st
from .keeper import Keeper, LibraryGone, LibraryJobs
from .settings import SETTABLE

log = logging.getLogger(__name__)

#: Seconds before a keeper that failed starts again.
RESTART_DELAY = 5.0
#: Libraries one server holds at most.
MAX_HELD = 10_000
#: The supervised task of the keepers.
LIBRARY_KEEPERS = "library-keepers"


class LibraryKeepers:
    def __init__(
        self,
        catalog: LibraryCatalog,
        jobs: LibraryJobs,
        *,
        node: str,
        roots: Sequence[str],
        lease: float,
        shared: bool = True,
    ) -> None:
        """`shared`: other servers use the database and may take a library over once its
        lease runs out (PostgreSQL); without, no lease is kept and keepers never give up."""
        self._catalog = catalog
        self._jobs = jobs
        self._node = node
        self._roots = tuple(roots)
        self._lease = lease
        self._shared = shared
        self._keepers: dict[str, tuple[bytes, asyncio.Task[None]]] = {}
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    def library_changed(self, library_id: str) -> None:
        """A library was created, updated or deleted on this server: look again now."""
        self._wake.set()

    def job_changed(self, previous: int, job: scan_pb2.Job) -> None:
        """An engine state listener: a library's job that ended is its last scan."""
        if job.library and is_terminal(job.state):
            task = asyncio.get_running_loop().create_task(self._record_end(job))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _record_end(self, job: scan_pb2.Job) -> None:
        try:
            library_id = job.library.removeprefix("libraries/")
            await st.update_status(self._catalog, library_id, st.job_ended(job))
        except Exception as exc:  # bookkeeping only: the next end records it again
            log.warning(
                "could not record the end of job %s in %s: %s", job.job_id, job.library, exc
            )

    async def run(self) -> None:
        """Hold libraries and keep their keepers running, until cancelled. Keepers run only
        while the leases were renewed less than half a lease ago: each renewal is bounded by
        that deadline, and a failed one waits no longer than it."""
        #: When the keepers must stop unless the leases are renewed (half a lease after the
        #: last renewal was asked for).
        deadline = time.monotonic() + self._lease / 2
        try:
            while True:
                self._wake.clear()
                asked = time.monotonic()
                bound = self._lease / 4
                if self._shared and self._keepers:
                    bound = min(bound, max(deadline - asked, 0.0))
                renewed = False
                try:
                    async with asyncio.timeout(bound):
                        held = await self._catalog.lease_libraries(
                            node=self._node, lease_s=self._lease, roots=self._roots, limit=MAX_HELD
                        )
                    renewed = True
                    deadline = asked + self._lease / 2
                    async with asyncio.timeout(self._lease / 3):
                        await self._reconcile(held)
                except (StorageError, TimeoutError) as exc:  # keep what runs, try again
                    reason = str(exc) or f"no answer within {bound:g}s"
                    log.warning("could not renew the leases of the libraries: %s", reason)
                    if self._shared and self._keepers and time.monotonic() >= deadline:
                        await self._give_up()
                pause = self._lease / 3
                if self._keepers and not renewed:  # failed: try again by the deadline
                    pause = min(pause, max(deadline - time.monotonic(), 0.0))
                try:
                    async with asyncio.timeout(pause):
                        await self._wake.wait()
                except TimeoutError:
                    pass
        finally:
            await self._stop_all()

    async def _give_up(self) -> None:
        """Stop every keeper before the leases run out and another server takes the libraries
        over: never two keepers of one library. They start again once a renewal succeeds."""
        log.warning(
            "the leases of %d libraries cannot be renewed: their keepers stop until the "
            "database answers again",
            len(self._keepers),
        )
        await self._stop_all(release=False)

    async def _reconcile(self, held: Sequence[str]) -> None:
        for library_id in set(self._keepers) - set(held):
            self._stop(library_id)
        for library_id in held:
            library = await self._catalog.get_library(library_id)
            if library is None:
                self._stop(library_id)
                continue
            settings = _settings(library)
            kept = self._keepers.get(library_id)
            if kept is not None and kept[0] == settings and not kept[1].done():
                continue
            self._stop(library_id)
            task = asyncio.create_task(self._keep(library), name=f"keeper {library_id}")
            self._keepers[library_id] = (settings, task)

    async def _keep(self, library: scan_pb2.Library) -> None:
        while True:
            try:
                await Keeper(library, self._catalog, self._jobs).run()
            except LibraryGone:
                return
            except Exception:
                log.exception(
                    "the keeper of library %s failed; it starts again in %gs",
                    library.name,
                    RESTART_DELAY,
                )
            await asyncio.sleep(RESTART_DELAY)
            fresh = await self._catalog.get_library(library.name.removeprefix("libraries/"))
            if fresh is None:
                return
            library = fresh

    def _stop(self, library_id: str) -> None:
        kept = self._keepers.pop(library_id, None)
        if kept is not None:
            kept[1].cancel()

    async def _stop_all(self, *, release: bool = True) -> None:
        ids = sorted(self._keepers)
        tasks = [task for _, task in self._keepers.values()]
        for task in tasks:
            task.cancel()
        self._keepers.clear()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        if ids and release:
            await self._catalog.release_libraries(node=self._node, library_ids=ids)


def _settings(library: scan_pb2.Library) -> bytes:
    """What a keeper runs by: a change of it restarts the keeper."""
    picked = scan_pb2.Library()
    for name in SETTABLE:
        field = scan_pb2.Library.DESCRIPTOR.fields_by_name[name]
        if field.message_type is not None:
            getattr(picked, name).CopyFrom(getattr(library, name))
        elif name != "recursive" or library.HasField("recursive"):
            setattr(picked, name, getattr(library, name))
    return picked.SerializeToString(deterministic=True)
