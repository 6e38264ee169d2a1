"""The server's periodic chores, each a supervised task (`supervisor.py`): the purge of finished
jobs past their retention, and the check of the database file."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol

from .store.factory import ServerStore

log = logging.getLogger(__name__)

#: How often finished jobs past their retention are purged (seconds).
PURGE_INTERVAL = 3600.0
#: How often the database file is checked while the server runs (seconds): removed or replaced
#: is fatal, no answer within --db-timeout is NOT_SERVING until it answers again.
DB_CHECK_INTERVAL = 1.0


class Health(Protocol):
    def set_problem(self, name: str, present: bool) -> None: ...


async def check_database(store: ServerStore, health: Health, stopping: Callable[[], bool]) -> None:
    """Check the database file every DB_CHECK_INTERVAL, also while nothing is written:
    removed or replaced is fatal (the store's `on_lost`); no answer is NOT_SERVING until it
    answers. Runs until cancelled."""
    while not store.lost:
        reachable = await store.check()
        if stopping():  # a cancel that Python 3.11's wait_for swallowed
            return
        health.set_problem("database-unreachable", not reachable)
        await asyncio.sleep(DB_CHECK_INTERVAL)
    await asyncio.Event().wait()  # lost: `on_lost` stops the server


async def purge_loop(store: ServerStore, retention: float) -> None:
    """Purge the finished jobs past `retention` seconds, now and every PURGE_INTERVAL (or
    `retention`, if shorter); a failed purge is retried at the next round. Runs until
    cancelled."""
    while True:
        cutoff = time.time_ns() - int(retention * 1e9)
        try:
            purged = await store.purge_finished(cutoff)
        except Exception:
            log.exception("purging old jobs failed; trying again later")
        else:
            if purged:
                log.info("purged %d finished job(s) past the retention period", purged)
        await asyncio.sleep(min(PURGE_INTERVAL, retention))


def start_maintenance(
    store: ServerStore, health: Health, retention: float, stopping: Callable[[], bool]
) -> list[asyncio.Task[None]]:
    """The server's maintenance tasks, started: `retention-purge` and `database-check` (each
    runs until cancelled; the caller supervises them)."""
    return [
        asyncio.create_task(purge_loop(store, retention), name="retention-purge"),
        asyncio.create_task(check_database(store, health, stopping), name="database-check"),
    ]
