"""BlockingLane: blocking calls off the loop, a batch per wake-up, UNAVAILABLE on a hang, and a
fresh thread once one is stuck (the folder checks of SubmitScan run in one)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from mediascan.server.errors import Code, Unavailable
from mediascan.server.lane import BlockingLane


async def test_calls_run_off_the_loop_and_errors_reach_the_caller() -> None:
    lane = BlockingLane("test", timeout=10)
    try:
        loop_thread = threading.get_ident()
        threads = await asyncio.gather(*(lane.call(threading.get_ident) for _ in range(50)))
        assert loop_thread not in threads
        assert len(set(threads)) == 1  # one thread serves them all
        with pytest.raises(ZeroDivisionError):
            await lane.call(divmod, 1, 0)
        assert await lane.call(divmod, 7, 2) == (3, 1)
    finally:
        lane.close()


async def test_a_hung_call_gives_unavailable_and_the_next_calls_a_new_thread() -> None:
    lane = BlockingLane("test", timeout=0.3, max_stuck=1)
    release = threading.Event()
    try:
        with pytest.raises(Unavailable) as hung:
            await lane.call(release.wait)
        assert hung.value.code == Code.UNAVAILABLE
        assert "did not answer within 0.3 s" in hung.value.message
        # The stuck thread is left behind; a new one answers at once.
        assert await asyncio.wait_for(lane.call(sum, [1, 2]), 5) == 3
        # A second hang: one stuck thread is the most this lane leaves behind, so calls
        # fail at once until the hung ones return.
        second = threading.Event()
        with pytest.raises(Unavailable):
            await lane.call(second.wait)
        with pytest.raises(Unavailable) as refused:
            await asyncio.wait_for(lane.call(sum, [1]), 5)
        assert "has not answered" in refused.value.message
        release.set()
        second.set()
        for thread in threading.enumerate():  # the stuck ones end once their calls return
            if thread.name == "test-lane" and thread is not threading.current_thread():
                await asyncio.to_thread(thread.join, 5)
        assert await asyncio.wait_for(lane.call(sum, [2, 2]), 5) == 4
    finally:
        release.set()
        lane.close()
