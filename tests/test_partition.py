"""Nodes that leave: a node cut off from the database by a real network partition (it runs in
a network namespace of its own, reaching PostgreSQL through a veth pair whose link the test
takes down), and a node stopped with SIGTERM while it runs a scan.

- The cut-off node cannot renew its lease and does not know it while the link is down (its
  database time limit is long, so its statements wait on the cut link): another node reclaims
  the job after the lease and finishes it; when the link comes back, the cut-off node drops the
  job without a write for its attempt (a write refused by the fence, or a renewal that fails and
  tells it the lease is lost, whichever comes first), and the job's log is one gapless story of
  two runs. tests/test_nodes.py freezes a node with SIGSTOP, where the fence alone decides.
- SIGTERM with a short `--shutdown-grace`: the node hands its running job back at once (QUEUED,
  attempt + 1), and a node started after it runs it to its end: with a lease of an hour, no
  reclaim could have moved it.

Each namespace and link has a unique name and is removed at the end; nothing here asserts
speed."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import random
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from _robust import (
    QUEUED,
    RUNNING,
    SUCCEEDED,
    Launcher,
    channel_to,
    check_history,
    job_history,
    launch_fixture,  # noqa: F401 - the `launch` fixture
    logged,
)
from psycopg import conninfo

from mediascan.server.testing import SLOW_PROBE, event_job, event_state, make_many
from mediascan.v1 import scan_pb2

pytestmark = pytest.mark.slow

WAIT = 90.0
FILES = 600
_CLONE_NEWNET = 0x40000000


def ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


@contextlib.contextmanager
def network_namespace() -> Iterator[tuple[str, str, str]]:
    """A network namespace linked to this one by a veth pair on a /30 of its own: (its name,
    the address of this side, the name of this side's end of the link). Taking this end down
    cuts the link silently: the namespace's end stays up (no carrier), so what it sends is
    lost, not refused."""
    tag = f"{os.getpid() % 10000}{random.randrange(1000)}"
    name, here, there = f"mscan{tag}", f"msh{tag}", f"msn{tag}"
    ip("netns", "add", name)
    try:
        ip("link", "add", here, "type", "veth", "peer", "name", there)
        ip("link", "set", there, "netns", name)
        # Two tests at once (pytest-xdist workers, or two runs) must not pick the same /30:
        # the pick and the address it gives this side happen under one lock of the machine.
        with open(Path(tempfile.gettempdir()) / "mediascan-test-subnets.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            taken = subprocess.run(["ip", "-o", "addr"], capture_output=True, text=True).stdout
            subnet = next(n for n in random.sample(range(256), 256) if f"10.213.{n}." not in taken)
            ip("addr", "add", f"10.213.{subnet}.1/30", "dev", here)
        ip("link", "set", here, "up")
        ip("-n", name, "addr", "add", f"10.213.{subnet}.2/30", "dev", there)
        ip("-n", name, "link", "set", there, "up")
        ip("-n", name, "link", "set", "lo", "up")
        yield name, f"10.213.{subnet}.1", here
    finally:
        subprocess.run(["ip", "netns", "delete", name], capture_output=True, check=False)
        subprocess.run(["ip", "link", "delete", here], capture_output=True, check=False)


def enter_namespace(name: str) -> Any:
    """A preexec_fn: the process runs in the network namespace `name`."""
    path = f"/run/netns/{name}"

    def enter() -> None:
        fd = os.open(path, os.O_RDONLY)
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns")
        os.close(fd)

    return enter


@contextlib.asynccontextmanager
async def forwarder(host: str, target: tuple[str, int]) -> AsyncIterator[int]:
    """A TCP forwarder on `host` (this side of the link) to PostgreSQL on 127.0.0.1: the port."""
    pumps: set[asyncio.Task[None]] = set()

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        writer.close()

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*target)
        for task in (pump(reader, up_writer), pump(up_reader, writer)):
            pumps.add(asyncio.create_task(task))

    server = await asyncio.start_server(connected, host, 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for task in pumps:
            task.cancel()
        await asyncio.gather(*pumps, return_exceptions=True)


async def watch_until(stub: Any, job_id: str, found: Any, events: list[Any]) -> None:
    """Follow the job from its start, keeping its events, until `found(events)`."""
    call = stub.WatchJob(scan_pb2.WatchJobRequest(job_id=job_id))
    try:
        async with asyncio.timeout(WAIT):
            async for event in call:
                events.append(event)
                if found(events):
                    return
    finally:
        call.cancel()


def runs_on(events: list[Any], node: str, attempt: int) -> bool:
    for event in events:
        job = event_job(event)
        if (
            event_state(event) == RUNNING
            and job is not None
            and (job.node, job.attempt)
            == (
                node,
                attempt,
            )
        ):
            return True
    return False


async def test_a_node_cut_off_by_a_partition_finds_its_writes_refused_when_it_heals(
    launch: Launcher, pg_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "many"
    make_many(folder, FILES, **SLOW_PROBE)
    params = conninfo.conninfo_to_dict(pg_url)
    with network_namespace() as (namespace, host, link):
        async with forwarder(host, ("127.0.0.1", int(params["port"]))) as port:
            # A node that cannot know: its statements wait on the cut link for as long as the
            # kernel retransmits (no tcp_user_timeout, keepalives and --db-timeout far off),
            # so it neither fails a renewal nor stops the job by itself before the link heals.
            cut_off_url = (
                f"postgresql://postgres@{host}:{port}/{params['dbname']}"
                "?tcp_user_timeout=0&keepalives_idle=600"
            )
            lease = ("--lease", "2s", "--workers", "1", "--probe-workers", "1")
            a = await launch(
                "--node-name", "A", *lease, "--db-timeout", "60s",
                db=cut_off_url, preexec_fn=enter_namespace(namespace),
            )  # fmt: skip
            c = await launch("--node-name", "C", "--workers", "0", db=pg_url)
            async with channel_to(c.address) as (_, on_c):
                job = await on_c.SubmitScan(scan_pb2.SubmitScanRequest(path=str(folder)))
                events: list[Any] = []
                await watch_until(on_c, job.job_id, lambda e: runs_on(e, "A", 1), events)
                ip("link", "set", link, "down")  # the partition
                b = await launch("--node-name", "B", *lease, db=pg_url)
                try:
                    await watch_until(on_c, job.job_id, lambda e: runs_on(e, "B", 2), events)
                finally:
                    ip("link", "set", link, "up")  # it heals
                # It drops the job without a write for attempt 1 (refused by the fence, or
                # stopped first by a renewal that failed once the link came back).
                await logged(a, "abandoned here (attempt 1)", WAIT)
                assert a.alive() and b.alive()
                final = None
                async with asyncio.timeout(WAIT):
                    while final is None or final.state != SUCCEEDED:
                        final = await on_c.GetJob(scan_pb2.GetJobRequest(job_id=job.job_id))
                        if final.state != SUCCEEDED:
                            await asyncio.sleep(0.2)
                assert final.node == "B" and final.attempt == 2
                history = await job_history(on_c, job.job_id)
                assert check_history(job.job_id, history) == {
                    "runs": 2,
                    "requeues": 1,
                    "final": SUCCEEDED,
                }
                assert history[-1].sequence == final.last_sequence  # nothing after the end
                page = await on_c.ListVideos(
                    scan_pb2.ListVideosRequest(path_prefix=str(folder), page_size=1000)
                )
                assert len({v.path for v in page.videos}) == len(page.videos) == FILES


async def test_sigterm_hands_a_running_job_back_at_once_to_another_node(
    launch: Launcher, pg_url: str, tmp_path: Path
) -> None:
    folder = tmp_path / "many"
    make_many(folder, FILES, **SLOW_PROBE)
    workers = ("--workers", "1", "--probe-workers", "1", "--lease", "1h")
    a = await launch("--node-name", "A", *workers, "--shutdown-grace", "0.2s", db=pg_url)
    async with channel_to(a.address) as (_, on_a):
        job = await on_a.SubmitScan(scan_pb2.SubmitScanRequest(path=str(folder)))
        events: list[Any] = []
        await watch_until(on_a, job.job_id, lambda e: runs_on(e, "A", 1), events)
    a.terminate()  # with nobody else to run it: only a hand-back lets B claim it
    assert await a.wait(60) == 0
    b = await launch("--node-name", "B", *workers, db=pg_url)
    async with channel_to(b.address) as (_, on_b):
        events = []
        await watch_until(on_b, job.job_id, lambda e: event_state(e[-1]) == SUCCEEDED, events)
        final = event_job(events[-1])
        assert final is not None and final.node == "B" and final.attempt == 2
        history = await job_history(on_b, job.job_id)
        assert check_history(job.job_id, history) == {
            "runs": 2,
            "requeues": 1,
            "final": SUCCEEDED,
        }
        requeue = next(e for e in history if event_state(e) == QUEUED)
        handed_back = event_job(requeue)
        assert handed_back is not None and handed_back.attempt == 2
        assert final.result.added + final.result.unchanged == FILES
