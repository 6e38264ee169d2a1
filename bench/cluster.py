"""7. Cluster: several `mediascan-server` nodes on one PostgreSQL database, a throwaway cluster of
this benchmark's own (`mediascan.server.testing_postgres`: initdb and pg_ctl on a free port, no
fsync), each figure against a baseline measured in the same run.

- Jobs claimed per second with 2 and 4 nodes against 1 node. Scans of empty folders (the
  smallest job there is) are all submitted first to an API-only node (`--workers 0`); then the
  worker nodes (default `--workers 2` each) start side by side. The rate runs from the first
  job's start_time to the last one's end_time, read from the database once all have ended.
- Cross-node WatchJob lag: a job submitted on an API-only node B runs on node A (one worker, one
  prober, a folder of slow-probing videos, progress at the default 10 events/s); subscribers on
  B and on A watch it at the same time, each recording the delay from an event's `event_time`
  (set by A when it made the event) to its receipt. Baseline: the subscribers on A.
- Submit requests/s on PostgreSQL against the same load on SQLite: the submit benchmark's load
  (bench.loadgen, 64 in flight over 4 connections, distinct empty folders) on one server each.
- The time from `kill -9` of the node running a scan to the scan running again on another node
  (`--lease 5s`: the lease must pass, then a reclaim round and a claim), against the same with
  SIGTERM (`--shutdown-grace 0.2s`: the node hands the job back at once). Measured from the
  signal to the `event_time` of the RUNNING event of attempt 2, which the other node stamps.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from pathlib import Path
from typing import Any

import psycopg

from mediascan.server.testing import make_video
from mediascan.server.testing_postgres import PostgresCluster, postgres_cluster
from mediascan.v1 import scan_pb2

from . import submit
from .common import (
    BIN,
    PYTHON,
    Client,
    Context,
    Row,
    ServerProcess,
    Sizes,
    Worker,
    folder_name,
    link_tree,
    median_of,
    mediascan_server,
    paired,
    server_env,
)
from .fanout import SLOW_CLIP, WATCH_JOB

BENCH = "7 cluster"
ONE = "1 node"
SAME_NODE = "same node"


def figures(sizes: Sizes) -> list[str]:
    names = [f"{n} nodes: jobs claimed/s" for n in sizes.cluster_nodes if n > 1]
    return [
        *names,
        "cross-node WatchJob lag p50 (ms)",
        "cross-node WatchJob lag p99 (ms)",
        "submit requests/s, PostgreSQL",
        "submit server CPU per request, PostgreSQL (µs)",
        "kill -9 to running again, lease 5 s (ms)",
    ]


async def run(ctx: Context) -> list[Row]:
    sizes = ctx.sizes
    empty = ctx.scratch / "cluster-empty"
    await asyncio.to_thread(_empty_folders, empty, max(sizes.cluster_jobs, sizes.submit_folders))
    seed = ctx.scratch / "cluster-seed.mp4"
    await asyncio.to_thread(make_video, seed, **SLOW_CLIP)
    slow = ctx.scratch / "cluster-slow"
    await asyncio.to_thread(link_tree, seed, slow, sizes.cluster_watch_files, per_folder=1000)
    ctx.log(f"{BENCH}: starting a throwaway PostgreSQL cluster")
    with postgres_cluster() as cluster:
        ctx.log(f"{BENCH}: PostgreSQL on port {cluster.port}")
        rows = await _claim_rows(ctx, cluster, empty)
        rows += await _lag_rows(ctx, cluster, slow)
        rows += await _submit_rows(ctx, cluster, empty)
        rows += await _recovery_rows(ctx, cluster, slow)
    return rows


def _empty_folders(root: Path, count: int) -> None:
    root.mkdir()
    for index in range(count + 1):  # the last one: a warm-up scan
        (root / folder_name(index)).mkdir()


async def _nodes(ctx: Context, name: str, url: str, specs: list[list[str]]) -> list[ServerProcess]:
    """One `mediascan-server` per spec (its extra flags) on database `url`, started side by side
    (each process's start-up overlaps the others')."""
    common = ["--listen", "127.0.0.1:0", "--db", url, "--max-queued", "1000000"]
    starts = []
    for number, spec in enumerate(specs):
        folder = ctx.fresh(f"{name}-{number}")
        if ctx.server_loop == "asyncio":
            argv = [str(BIN / "mediascan-server")]
        else:
            argv = [PYTHON, "-m", "bench.serve", f"--loop={ctx.server_loop}"]
        argv += [*common, "--node-name", f"{name}-{number}", "--shutdown-grace", "1s", *spec]
        starts.append(
            asyncio.to_thread(ServerProcess, argv, log=folder / "server.log", env=server_env())
        )
    results = await asyncio.gather(*starts, return_exceptions=True)
    servers = [r for r in results if isinstance(r, ServerProcess)]
    failed = [r for r in results if isinstance(r, BaseException)]
    if failed:
        await _stop(servers)
        raise failed[0]
    return servers


async def _stop(servers: list[ServerProcess]) -> None:
    await asyncio.gather(*(asyncio.to_thread(s.stop) for s in servers))


# -- jobs claimed per second ----------------------------------------------------------------------


async def _claim_rows(ctx: Context, cluster: PostgresCluster, empty: Path) -> list[Row]:
    sizes = ctx.sizes
    runs: list[dict[int, dict[str, Any]]] = []
    for number in range(1, sizes.runs + 1):
        by_nodes = {}
        for nodes in sizes.cluster_nodes:
            result = await _claims(ctx, cluster, empty, nodes)
            ctx.log(
                f"{BENCH}: run {number}/{sizes.runs}: {nodes} node(s): "
                f"{result['jobs_per_s']:,.0f} jobs/s ({result['by_node']})"
            )
            by_nodes[nodes] = result
        runs.append(by_nodes)
    one = median_of(r[1]["jobs_per_s"] for r in runs)
    rows = []
    for nodes in sizes.cluster_nodes:
        if nodes == 1:
            continue
        spread = [r[nodes]["by_node"] for r in runs]
        rows.append(
            paired(
                BENCH,
                f"{nodes} nodes: jobs claimed/s",
                [(r[nodes]["jobs_per_s"], r[1]["jobs_per_s"]) for r in runs],
                baseline_name=ONE,
                note=f"{sizes.cluster_jobs:,} scans of empty folders submitted first to an "
                f"API-only node; {nodes} nodes of 2 workers each; 1 node: {one:,.0f} jobs/s; "
                f"jobs per node {spread}",
                details=[{"by_node": s} for s in spread],
            )
        )
    return rows


async def _claims(
    ctx: Context, cluster: PostgresCluster, empty: Path, nodes: int
) -> dict[str, Any]:
    count = ctx.sizes.cluster_jobs
    url = await asyncio.to_thread(cluster.fresh)
    (api,) = await _nodes(ctx, "cluster-api", url, [["--workers", "0"]])
    workers: list[ServerProcess] = []
    try:
        loadgen = await Worker.start(
            ctx,
            "cluster-submit",
            "unary",
            "--target",
            api.address,
            "--method",
            submit.SUBMIT_METHOD,
            "--root",
            str(empty),
            "--folders",
            str(count),
            "--once",
            "--limit",
            "900",
        )
        submitted = await loadgen.result(960)
        if submitted["errors"] or submitted["completed"] != count:
            raise RuntimeError(f"submits failed: {submitted['errors']}")
        workers = await _nodes(ctx, f"cluster-{nodes}n", url, [[] for _ in range(nodes)])
        await _until_finished(url, 1800)
    finally:
        await _stop([api, *workers])
    return await asyncio.to_thread(_claim_span, url, count)


async def _until_finished(url: str, limit: float) -> None:
    """Wait until every job has ended (one connection, asked every 0.1 s)."""
    conn = await psycopg.AsyncConnection.connect(url, autocommit=True)
    try:
        async with asyncio.timeout(limit):
            while True:
                cursor = await conn.execute("SELECT count(*) FROM jobs WHERE end_ns IS NULL")
                row = await cursor.fetchone()
                if row is not None and row[0] == 0:
                    return
                await asyncio.sleep(0.1)
    finally:
        await conn.close()


def _claim_span(url: str, count: int) -> dict[str, Any]:
    """From the first start_time to the last end_time of the jobs, and the jobs of each node."""
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT node, job FROM jobs").fetchall()
    starts: list[int] = []
    ends: list[int] = []
    by_node: dict[str, int] = {}
    states: dict[str, int] = {}
    for node, blob in rows:
        job = scan_pb2.Job.FromString(bytes(blob))
        starts.append(job.start_time.ToNanoseconds())
        ends.append(job.end_time.ToNanoseconds())
        by_node[node] = by_node.get(node, 0) + 1
        name = scan_pb2.JobState.Name(job.state)
        states[name] = states.get(name, 0) + 1
    if states.get("JOB_STATE_SUCCEEDED") != count:
        raise RuntimeError(f"not every job succeeded: {states}")
    seconds = (max(ends) - min(starts)) / 1e9
    return {"jobs_per_s": count / seconds, "seconds": seconds, "by_node": sorted(by_node.values())}


# -- cross-node WatchJob lag ----------------------------------------------------------------------


async def _lag_rows(ctx: Context, cluster: PostgresCluster, slow: Path) -> list[Row]:
    sizes = ctx.sizes
    runs = []
    for number in range(1, sizes.runs + 1):
        cross, same = await _lag(ctx, cluster, slow)
        ctx.log(
            f"{BENCH}: run {number}/{sizes.runs}: WatchJob lag p50/p99 {cross['lag_p50_ms']:.1f}/"
            f"{cross['lag_p99_ms']:.1f} ms across nodes, {same['lag_p50_ms']:.1f}/"
            f"{same['lag_p99_ms']:.1f} ms on the running node"
        )
        runs.append((cross, same))
    delivered = [(c["delivered"], s["delivered"]) for c, s in runs]
    note = (
        f"{sizes.cluster_watchers} subscribers on each node, {sizes.fanout_duration:g} s after "
        f"{sizes.fanout_warmup:g} s; events received (cross, same) {delivered}"
    )
    keep = ("delivered", "source_events_per_s", "resyncs", "ended", "errors")
    details = [
        {**{k: c.get(k) for k in keep}, **{f"baseline_{k}": s.get(k) for k in keep}}
        for c, s in runs
    ]
    return [
        paired(
            BENCH,
            "cross-node WatchJob lag p50 (ms)",
            [(c["lag_p50_ms"], s["lag_p50_ms"]) for c, s in runs],
            baseline_name=SAME_NODE,
            note=note,
            details=details,
        ),
        paired(
            BENCH,
            "cross-node WatchJob lag p99 (ms)",
            [(c["lag_p99_ms"], s["lag_p99_ms"]) for c, s in runs],
            baseline_name=SAME_NODE,
        ),
    ]


async def _lag(
    ctx: Context, cluster: PostgresCluster, slow: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    sizes = ctx.sizes
    url = await asyncio.to_thread(cluster.fresh)
    runner, api = servers = await _nodes(
        ctx,
        "cluster-lag",
        url,
        [["--workers", "1", "--probe-workers", "1"], ["--workers", "0"]],
    )
    try:
        async with Client(api.address) as client:
            job = await client.submit(slow, timeout={"seconds": 3600})
            await client.until_progress(job.job_id, 1, 60)
            request = scan_pb2.WatchJobRequest(job_id=job.job_id).SerializeToString().hex()
            args = [
                "watch",
                "--method",
                WATCH_JOB,
                "--request-hex",
                request,
                "--subscribers",
                str(sizes.cluster_watchers),
                "--warmup",
                str(sizes.fanout_warmup),
                "--duration",
                str(sizes.fanout_duration),
            ]
            cross = await Worker.start(ctx, "cluster-watch-b", *args, "--target", api.address)
            same = await Worker.start(ctx, "cluster-watch-a", *args, "--target", runner.address)
            limit = sizes.fanout_warmup + sizes.fanout_duration + 120
            results = await asyncio.gather(_watched(cross, limit), _watched(same, limit))
            with contextlib.suppress(Exception):
                await client.cancel(job.job_id)
    finally:
        await _stop(servers)
    for result in results:
        result.pop("lags_us", None)
        if not result["delivered"]:
            raise RuntimeError(f"no progress event was received: {result}")
    return results[0], results[1]


async def _watched(worker: Worker, limit: float) -> dict[str, Any]:
    await worker.expect("attached", limit)
    await worker.expect("window-end", limit)
    return await worker.result(limit)


# -- submit on PostgreSQL and on SQLite -----------------------------------------------------------


async def _submit_rows(ctx: Context, cluster: PostgresCluster, empty: Path) -> list[Row]:
    sizes = ctx.sizes
    runs = []
    for number in range(1, sizes.runs + 1):
        url = await asyncio.to_thread(cluster.fresh)
        postgres = await _submits(ctx, empty, ["--db", url])
        sqlite = await _submits(ctx, empty, [])
        ctx.log(
            f"{BENCH}: run {number}/{sizes.runs}: submit {postgres['rps']:,.0f} requests/s on "
            f"PostgreSQL, {sqlite['rps']:,.0f} on SQLite"
        )
        runs.append((postgres, sqlite))
    cpu = median_of(p["server_cpu"] for p, _ in runs)
    note = (
        f"{sizes.submit_concurrency} in flight over {sizes.submit_channels} connections, "
        f"{sizes.submit_duration:g} s after {sizes.submit_warmup:g} s; one server with 1 worker "
        f"(the accepted jobs run meanwhile); server CPU {cpu:.2f} cores on PostgreSQL, not "
        "counting PostgreSQL's own processes"
    )
    return [
        paired(
            BENCH,
            "submit requests/s, PostgreSQL",
            [(p["rps"], s["rps"]) for p, s in runs],
            baseline_name="SQLite",
            note=note,
        ),
        paired(
            BENCH,
            "submit server CPU per request, PostgreSQL (µs)",
            [(p["cpu_per_request_us"], s["cpu_per_request_us"]) for p, s in runs],
            baseline_name="SQLite",
        ),
    ]


async def _submits(ctx: Context, empty: Path, db: list[str]) -> dict[str, Any]:
    sizes = ctx.sizes
    args = ["--max-queued", "1000000", "--workers", "1", "--shutdown-grace", "1s", *db]
    server, _ = mediascan_server(ctx, "cluster-submit-" + ("pg" if db else "sqlite"), *args)
    try:
        async with Client(server.address) as client:
            await client.scan(empty / folder_name(sizes.submit_folders), 30)
        load = submit.load_args(sizes, server.address, submit.SUBMIT_METHOD, empty)
        worker = await Worker.start(ctx, "cluster-submit-loadgen", *load)
        return await submit.measure(worker, server.pid, sizes)
    finally:
        await asyncio.to_thread(server.stop)


# -- kill -9 to running again ---------------------------------------------------------------------

RECOVERY_LEASE = "5s"


async def _recovery_rows(ctx: Context, cluster: PostgresCluster, slow: Path) -> list[Row]:
    runs = []
    for number in range(1, ctx.sizes.runs + 1):
        killed = await _recovery(ctx, cluster, slow, signal.SIGKILL)
        stopped = await _recovery(ctx, cluster, slow, signal.SIGTERM)
        ctx.log(
            f"{BENCH}: run {number}/{ctx.sizes.runs}: running again {killed:.0f} ms after "
            f"kill -9, {stopped:.0f} ms after SIGTERM"
        )
        runs.append((killed, stopped))
    return [
        paired(
            BENCH,
            "kill -9 to running again, lease 5 s (ms)",
            runs,
            baseline_name="SIGTERM",
            note="bounded by the lease plus a renewal round (a third of it) plus the claim",
        )
    ]


def _second_start(event: scan_pb2.JobEvent) -> float | None:
    """When attempt 2 started running (epoch seconds), if `event` says so."""
    if event.HasField("state_change"):
        change = event.state_change
        if change.to_state == scan_pb2.JOB_STATE_RUNNING and change.job.attempt == 2:
            return event.event_time.ToNanoseconds() / 1e9
    elif event.HasField("snapshot"):
        job = event.snapshot.job
        if job.attempt >= 2 and job.HasField("start_time"):
            return job.start_time.ToNanoseconds() / 1e9
    return None


def _state_of(job: Any) -> str:
    """A job's state, attempt and node, for an error message."""
    return f"{scan_pb2.JobState.Name(job.state)} (attempt {job.attempt} on {job.node or '-'})"


async def _recovery(
    ctx: Context, cluster: PostgresCluster, slow: Path, how: signal.Signals
) -> float:
    """Milliseconds from `how` sent to the node running a scan to the scan's RUNNING event of
    attempt 2 on the other node."""
    url = await asyncio.to_thread(cluster.fresh)
    flags = ["--workers", "1", "--probe-workers", "1", "--lease", RECOVERY_LEASE]
    (first,) = await _nodes(ctx, "cluster-kill-a", url, [[*flags, "--shutdown-grace", "0.2s"]])
    servers = [first]
    try:
        async with Client(first.address) as on_first:
            job = await on_first.submit(slow, timeout={"seconds": 3600})
            await on_first.until_progress(job.job_id, 1, 60)
        servers += await _nodes(ctx, "cluster-kill-b", url, [flags])
        async with Client(servers[1].address) as on_second:
            sent = time.time()
            first.popen.send_signal(how)
            # Every stored event (not a snapshot): attempt 2 may be running before it attaches.
            # A stream that falls behind gets a snapshot instead of the events it missed: then
            # the second attempt's start is its job's start_time.
            request = scan_pb2.WatchJobRequest(job_id=job.job_id, after_sequence=1)
            call = on_second.stub.WatchJob(request)
            async with asyncio.timeout(120):
                async for event in call:
                    started = _second_start(event)
                    if started is not None:
                        call.cancel()
                        return (started - sent) * 1000
            job = await on_second.stub.GetJob(scan_pb2.GetJobRequest(job_id=job.job_id))
        raise RuntimeError(
            f"the scan did not run again: its stream ended with the job {_state_of(job)}"
        )
    finally:
        await _stop(servers)
