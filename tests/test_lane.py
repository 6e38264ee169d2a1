"""BlockingLane: blocking calls off the loop, a batch per wake-up, UNAVAILABLE on a hang, and a
fresh thread once one is stuck (the folder checks of SubmitScan run in one)."""

from __future__ import annotations

import asyncio
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from mediascan.server.errors import Code, Unavailable
from mediascan.server.lane import BlockingLane
from mediascan.server.testing import final_job
from mediascan.v1 import scan_pb2

#: The lane's timeout where a call hangs: long enough for a loaded machine to start the thread
#: on the call (0.3 s was not, at a load average of 12 on 2 cores).
HANG_TIMEOUT = 2.0


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


@pytest.mark.slow
async def test_a_hung_call_gives_unavailable_and_the_next_calls_a_new_thread() -> None:
    # The lane counts a thread as stuck only once it has started the call that timed out: the
    # timeout leaves room for a busy machine to wake the thread up first.
    lane = BlockingLane("test", timeout=HANG_TIMEOUT, max_stuck=1)
    release = threading.Event()
    second = threading.Event()
    try:
        with pytest.raises(Unavailable) as hung:
            await lane.call(release.wait)
        assert hung.value.code == Code.UNAVAILABLE
        assert f"did not answer within {HANG_TIMEOUT:g} s" in hung.value.message
        # The stuck thread is left behind; a new one answers at once.
        assert await asyncio.wait_for(lane.call(sum, [1, 2]), 30) == 3
        # A second hang: one stuck thread is the most this lane leaves behind, so calls
        # fail at once until the hung ones return.
        with pytest.raises(Unavailable):
            await lane.call(second.wait)
        with pytest.raises(Unavailable) as refused:
            await asyncio.wait_for(lane.call(sum, [1]), 30)
        assert "has not answered" in refused.value.message
        release.set()
        second.set()
        for thread in threading.enumerate():  # the stuck ones end once their calls return
            if thread.name == "test-lane" and thread is not threading.current_thread():
                await asyncio.to_thread(thread.join, 30)
        assert await asyncio.wait_for(lane.call(sum, [2, 2]), 30) == 4
    finally:
        release.set()
        second.set()
        lane.close()


@pytest.mark.slow
async def test_a_hang_that_started_late_is_still_found_stuck() -> None:
    # The hung call waits 0.5 s behind a slow one, so when it times out it has run for 1.5 s,
    # less than the timeout: its thread is stuck all the same, and the next call gets a new
    # one (it used to be queued behind the hang, and time out too).
    lane = BlockingLane("late", timeout=HANG_TIMEOUT, max_stuck=1)
    release = threading.Event()
    try:
        # gather starts the calls in this order: the slow one is queued first.
        slow, hung = await asyncio.gather(
            lane.call(time.sleep, 0.5), lane.call(release.wait), return_exceptions=True
        )
        assert slow is None and isinstance(hung, Unavailable), (slow, hung)
        assert await asyncio.wait_for(lane.call(sum, [1, 2]), 30) == 3
        assert len(lane_threads("late-lane")) == 2  # the stuck one, and the new one
    finally:
        release.set()
        lane.close()


@pytest.mark.slow
async def test_a_call_that_waited_behind_slow_ones_leaves_the_thread_in_place() -> None:
    # Slow calls, no hang: the second waits 1.5 s behind the first and has run for 0.5 s when
    # it times out. That is no sign of a hung thread: no new thread, nothing refused.
    lane = BlockingLane("busy", timeout=HANG_TIMEOUT, max_stuck=0)
    try:
        first, second = await asyncio.gather(
            lane.call(time.sleep, 1.5), lane.call(time.sleep, 1.5), return_exceptions=True
        )
        assert first is None and isinstance(second, Unavailable), (first, second)
        assert await asyncio.wait_for(lane.call(sum, [2, 2]), 30) == 4
        assert len(lane_threads("busy-lane")) == 1
    finally:
        lane.close()


async def test_a_closed_lane_refuses_calls_and_starts_no_thread() -> None:
    lane = BlockingLane("closed", timeout=10)
    assert await lane.call(sum, [1, 2]) == 3
    worker = lane_threads("closed-lane")
    lane.close()
    for thread in worker:
        await asyncio.to_thread(thread.join, 10)
        assert not thread.is_alive()
    with pytest.raises(Unavailable) as refused:
        await lane.call(sum, [1])
    assert refused.value.code == Code.UNAVAILABLE
    assert "stopping" in refused.value.message
    assert lane_threads("closed-lane") == []


async def test_a_stopped_server_leaves_no_path_lane_thread(
    make_server: Any, connect: Any, small_folders: list[Path]
) -> None:
    """SubmitScan resolves its folder in the `path` lane's thread; stop() ends that thread
    (it used to wait on its queue for the rest of the process's life)."""
    before = set(lane_threads("path-lane"))
    server = await make_server()
    stub = await connect(server.address)
    job = await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(small_folders[0])))
    await final_job(stub, job.job_id)
    started = [t for t in lane_threads("path-lane") if t not in before]
    assert started, "SubmitScan did not use the path lane"
    await server.stop()
    for thread in started:
        await asyncio.to_thread(thread.join, 10)
    assert not [t for t in started if t.is_alive()], "the path lane's thread outlived stop()"


def lane_threads(name: str) -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == name and t.is_alive()]
