"""The one way a store limits a wait: `within` waits for work at most a time limit, then
raises DatabaseTimeout, and lets the work go on (a queued write still commits); `seen`, for a
future whose outcome nobody may wait for any more."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from .protocol import DatabaseTimeout

T = TypeVar("T")


async def within(work: Awaitable[T], timeout: float, why: str) -> T:
    """`work`'s outcome, waited for at most `timeout` seconds; past it DatabaseTimeout saying
    "the database ... did not answer within T s (`why`); retry later". The work is shielded:
    a caller that gives up (a timeout, a cancel) does not stop it."""
    future = asyncio.ensure_future(work)
    future.add_done_callback(seen)  # an outcome nobody waits for any more
    try:
        # asyncio.timeout, not wait_for: Python 3.11's wait_for loses a cancel that arrives as
        # the work completes (a cancelled job's scan would then go on to its end).
        async with asyncio.timeout(timeout):
            return await asyncio.shield(future)
    except TimeoutError:
        raise DatabaseTimeout(
            f"the database did not answer within {timeout:g}s ({why}); retry later"
        ) from None


def seen(future: asyncio.Future[Any]) -> None:
    """Mark a future's exception as retrieved (its caller raised it, or is gone): a done
    callback, so that asyncio never logs "exception was never retrieved" for it."""
    if not future.cancelled():
        future.exception()
