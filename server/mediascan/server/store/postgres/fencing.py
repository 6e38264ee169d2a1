"""Fencing of the library writes made for a job: a write for an attempt that is no longer the
job's current one, or for a job that no longer runs, is refused inside its own transaction
(`LeaseLost`), so that a server cut off from the database, or paused, and come back cannot
write videos for a job that another server has reclaimed."""

from __future__ import annotations

from ..protocol import Fence, LeaseLost
from .schema import RUNNING, Connection


async def check_fence(conn: Connection, fence: Fence | None, *, lock: bool = True) -> None:
    """LeaseLost unless the job of `fence` is RUNNING at that attempt. With `lock` (a write),
    the job's row is locked FOR SHARE until the transaction ends: a reclaim (which updates it)
    waits for this write, and this write never lands after one."""
    if fence is None:
        return
    cursor = await conn.execute(
        "SELECT attempt, state FROM jobs WHERE job_id = %s" + (" FOR SHARE" if lock else ""),
        (fence.job_id,),
    )
    row = await cursor.fetchone()
    if row is None:
        raise LeaseLost(f"job {fence.job_id} no longer exists: its library writes are refused")
    attempt, state = int(row[0]), int(row[1])
    if attempt != fence.attempt or state != RUNNING:
        raise LeaseLost(
            f"job {fence.job_id}: attempt {fence.attempt} is over (the job is at attempt "
            f"{attempt}{'' if state == RUNNING else ', no longer running'}): its library "
            "writes are refused"
        )
