"""2. Progress fan-out: 1, 100 and 1,000 WatchJob subscribers on one running job that emits progress
events at the server's default rate (`--progress-rate 10`, with `--progress-fanout` raised so
that 1,000 subscribers still get all ten a second), against a bare grpc.aio server
(`bare.py push`) pushing progress events of the same size at 10 a second to as many streams.

The job is a full scan of a large folder of tiny videos with eight audio streams each (slow
probes), run by a single prober process whose priority is lowered to nice 19: it keeps the job
alive and its progress moving, but takes only CPU time the server and the subscribers leave idle,
so the comparison is about delivery, not about the probing competing for the 2 cores. The job is
cancelled after each measurement.

Figures: delivered events/s (all subscribers together, over the measured window), the delay from
an event's `event_time` (set by the server when it makes the event) to its receipt (p50, p99),
and the server's VmRSS growth per subscriber between before and after they attached.

Then, with 10% of the subscribers stalled (they read their first event and never again, on
connections with a 1 KiB flow-control window so the server feels it at once), the job's scan
speed and the server's memory must stay flat compared with everyone reading.

Last, a whole scan watched by 1,000 subscribers at the server's default fan-out budget against
the same scan unwatched (`watched.py`).
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from mediascan.server.testing import make_video
from mediascan.v1 import scan_pb2

from . import watched
from .bare import WATCH_METHOD
from .common import (
    Client,
    Context,
    Row,
    ServerProcess,
    Sizes,
    Worker,
    bare_server,
    children,
    cpu_seconds,
    link_tree,
    median_of,
    mediascan_server,
    paired,
    percentile,
)

BENCH = "2 fan-out"
WATCH_JOB = "/mediascan.v1.ScanService/WatchJob"
PROBER_NICE = 19
#: The job may send 10 progress events a second to every one of 1,000 subscribers (the server's
#: default --progress-fanout of 500 would slow them to one every 2 s at 1,000 subscribers, and
#: to five a second at 100): the benchmark measures delivery at the bare server's rate.
PROGRESS_FANOUT = 10_000
#: Eight audio streams: FFmpeg reads a little of each, so every probe is slow.
SLOW_CLIP = {"width": 64, "height": 48, "seconds": 0.2, "audio_codec": "aac", "audio_streams": 8}


def figures(sizes: Sizes) -> list[str]:
    names = []
    for count in sizes.fanout_counts:
        names += [
            f"{count} subs: delivered events/s",
            f"{count} subs: lag p50 (ms)",
            f"{count} subs: lag p99 (ms)",
        ]
        if count > 1:
            names.append(f"{count} subs: server RSS per subscriber (KiB)")
    most = max(sizes.fanout_counts)
    names += [
        f"{most} subs, 10% stalled: scan files/s",
        f"{most} subs, 10% stalled: server RSS (MiB)",
        f"{most} subs, 10% stalled: readers' lag p99 (ms)",
    ]
    return names + watched.figures(sizes)


async def run(ctx: Context) -> list[Row]:
    sizes = ctx.sizes
    seed = ctx.scratch / "fanout-seed.mp4"
    await asyncio.to_thread(make_video, seed, **SLOW_CLIP)
    tree = ctx.scratch / "fanout"
    await asyncio.to_thread(link_tree, seed, tree, sizes.fanout_files, per_folder=1000)
    warm = ctx.scratch / "fanout-warm"
    await asyncio.to_thread(link_tree, seed, warm, 1, per_folder=1)
    ctx.log(f"{BENCH}: {sizes.fanout_files:,} slow-probing videos under {tree}")

    event_bytes = 0
    rows: list[Row] = []
    normal: dict[int, list[dict[str, Any]]] = {}
    for count in sizes.fanout_counts:
        pairs = []
        for number in range(1, sizes.runs + 1):
            ctx.log(f"{BENCH}: {count} subscriber(s), run {number}/{sizes.runs}: mediascan")
            mine = await _mediascan(ctx, tree, warm, count, 0)
            event_bytes = event_bytes or mine["event_bytes"]
            ctx.log(f"{BENCH}: {count} subscriber(s), run {number}: bare ({event_bytes} B)")
            bare = await _bare(ctx, count, event_bytes)
            ctx.log(
                f"{BENCH}: {count}: {mine['delivered_per_s']:,.0f} vs "
                f"{bare['delivered_per_s']:,.0f} events/s, p99 {mine['lag_p99_ms']:.1f} vs "
                f"{bare['lag_p99_ms']:.1f} ms"
            )
            pairs.append((mine, bare))
        normal[count] = [m for m, _ in pairs]
        rows += _rows(count, pairs, event_bytes)

    most = max(sizes.fanout_counts)
    stalled = max(1, round(most * sizes.stalled_share))
    stall_runs = []
    for number in range(1, sizes.runs + 1):
        ctx.log(f"{BENCH}: {most} subscribers, {stalled} stalled, run {number}/{sizes.runs}")
        stall_runs.append(await _mediascan(ctx, tree, warm, most - stalled, stalled))
    reading = normal[most]
    pairs_scan = [
        (s["scan_files_per_s"], r["scan_files_per_s"])
        for s, r in zip(stall_runs, reading, strict=True)
    ]
    pairs_rss = [
        (s["rss_end_kib"] / 1024, r["rss_end_kib"] / 1024)
        for s, r in zip(stall_runs, reading, strict=True)
    ]
    pairs_lag = [
        (s["lag_p99_ms"], r["lag_p99_ms"]) for s, r in zip(stall_runs, reading, strict=True)
    ]
    growth = [s["rss_end_kib"] - s["rss_attached_kib"] for s in stall_runs]
    prefix = f"{most} subs, 10% stalled"
    everyone = f"all {most} reading"
    rows += [
        paired(
            BENCH,
            f"{prefix}: scan files/s",
            pairs_scan,
            baseline_name=everyone,
            target=(">=", 0.9),
            note=f"{stalled} of {most} stalled; 'flat' taken as within 10% of everyone reading",
        ),
        paired(
            BENCH,
            f"{prefix}: server RSS (MiB)",
            pairs_rss,
            baseline_name=everyone,
            target=("<=", 1.1),
            note="VmRSS at the end of the window; growth over the window with stalled "
            f"subscribers: {', '.join(f'{g:+,} KiB' for g in growth)}",
        ),
        paired(BENCH, f"{prefix}: readers' lag p99 (ms)", pairs_lag, baseline_name=everyone),
    ]
    rows += await watched.run(ctx, BENCH, seed, tree)
    return rows


def _rows(
    count: int, pairs: list[tuple[dict[str, Any], dict[str, Any]]], event_bytes: int
) -> list[Row]:
    bare = "bare grpc.aio push"
    prefix = f"{count} subs"
    source = [m["source_events_per_s"] for m, _ in pairs if m["source_events_per_s"]]
    note = f"{event_bytes} B progress events"
    if source:
        note += f"; the job made {min(source):.1f}-{max(source):.1f} events/s"
    cpu = [(m["server_cpu"], b["server_cpu"]) for m, b in pairs]
    note += (
        f"; server CPU {median_of(c for c, _ in cpu):.2f} vs bare "
        f"{median_of(c for _, c in cpu):.2f} cores"
    )
    keep = ("server_cpu", "source_events_per_s", "resyncs", "ended_early", "errors")
    details = [
        {**{k: m[k] for k in keep}, **{f"baseline_{k}": b[k] for k in keep}} for m, b in pairs
    ]
    rows = [
        paired(
            BENCH,
            f"{prefix}: delivered events/s",
            [(m["delivered_per_s"], b["delivered_per_s"]) for m, b in pairs],
            baseline_name=bare,
            target=(">=", 0.9),
            note=note,
            details=details,
        ),
        paired(
            BENCH,
            f"{prefix}: lag p50 (ms)",
            [(m["lag_p50_ms"], b["lag_p50_ms"]) for m, b in pairs],
            baseline_name=bare,
        ),
        paired(
            BENCH,
            f"{prefix}: lag p99 (ms)",
            [(m["lag_p99_ms"], b["lag_p99_ms"]) for m, b in pairs],
            baseline_name=bare,
            target=("<=", 1.5),
        ),
    ]
    if count > 1:
        rows.append(
            paired(
                BENCH,
                f"{prefix}: server RSS per subscriber (KiB)",
                [(m["rss_per_sub_kib"], b["rss_per_sub_kib"]) for m, b in pairs],
                baseline_name=bare,
                target=("<=", 20),
                target_on="value",
            )
        )
    return rows


def _split(total: int, parts: int) -> list[int]:
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


async def _subscribe(
    ctx: Context,
    server: ServerProcess,
    method: str,
    request: bytes,
    readers: int,
    stalled: int,
) -> dict[str, Any]:
    """Attach the subscribers (load generator processes), measure, and merge their results."""
    sizes = ctx.sizes
    procs = 1 if readers + stalled <= 100 else min(2, os.cpu_count() or 1)
    rss_before = server.rss_kib() or 0
    cpu_before, started = cpu_seconds(server.pid) or 0.0, time.monotonic()
    workers = []
    for share, stall_share in zip(_split(readers, procs), _split(stalled, procs), strict=True):
        workers.append(
            await Worker.start(
                ctx,
                "watch-loadgen",
                "watch",
                "--target",
                server.address,
                "--method",
                method,
                "--request-hex",
                request.hex(),
                "--subscribers",
                str(share),
                "--stalled",
                str(stall_share),
                "--per-channel",
                str(sizes.fanout_per_channel),
                "--warmup",
                str(sizes.fanout_warmup),
                "--duration",
                str(sizes.fanout_duration),
            )
        )
    try:
        for worker in workers:
            await worker.expect("attached", 120)
        await asyncio.sleep(0.5)
        rss_attached = server.rss_kib() or 0
        for worker in workers:
            await worker.expect("window-end", sizes.fanout_warmup + sizes.fanout_duration + 60)
        rss_end = server.rss_kib() or 0
        cpu_after, ended = cpu_seconds(server.pid) or 0.0, time.monotonic()
        results = [await worker.result(60) for worker in workers]
    finally:
        for worker in workers:
            worker.kill()
    lags = [lag for r in results for lag in r.pop("lags_us")]
    first = results[0]
    errors: dict[str, int] = {}
    for r in results:
        for code, n in r["errors"].items():
            errors[code] = errors.get(code, 0) + n
    return {
        "readers": readers,
        "stalled": stalled,
        "delivered_per_s": sum(r["delivered_per_s"] for r in results),
        "lag_p50_ms": (percentile(lags, 50) or 0) / 1000,
        "lag_p99_ms": (percentile(lags, 99) or 0) / 1000,
        "source_events_per_s": first["source_events_per_s"],
        "scan_files_per_s": first["scan_files_per_s"],
        "rss_before_kib": rss_before,
        "rss_attached_kib": rss_attached,
        "rss_end_kib": rss_end,
        "rss_per_sub_kib": (rss_attached - rss_before) / max(1, readers + stalled),
        "server_cpu": (cpu_after - cpu_before) / max(1e-9, ended - started),
        "ended_early": sum(r["ended"] for r in results),
        "resyncs": sum(r["resyncs"] for r in results),
        "errors": errors,
    }


async def _mediascan(
    ctx: Context, tree: Path, warm: Path, readers: int, stalled: int
) -> dict[str, Any]:
    server, _ = mediascan_server(
        ctx,
        "fanout",
        "--probe-workers",
        "1",
        "--shutdown-grace",
        "1s",
        "--progress-fanout",
        str(PROGRESS_FANOUT),
    )
    try:
        async with Client(server.address) as client:
            await client.scan(warm, 60)  # the prober is up and warm
            for pid in children(server.pid):
                os.setpriority(os.PRIO_PROCESS, pid, PROBER_NICE)
            job = await client.submit(tree, full=True)
            sizes = await _event_sizes(client, job.job_id)
            request = scan_pb2.WatchJobRequest(job_id=job.job_id).SerializeToString()
            result = await _subscribe(ctx, server, WATCH_JOB, request, readers, stalled)
            still = await client.stub.GetJob(scan_pb2.GetJobRequest(job_id=job.job_id))
            result["job_running_at_end"] = still.state == scan_pb2.JOB_STATE_RUNNING
            if not result["job_running_at_end"]:
                raise RuntimeError(
                    f"the fan-out job ended during the measurement ({still.state}): make "
                    "the folder bigger"
                )
            await client.cancel(job.job_id)
    finally:
        await asyncio.to_thread(server.stop)
    result["event_bytes"] = sorted(sizes)[len(sizes) // 2]
    return result


async def _event_sizes(client: Client, job_id: str) -> list[int]:
    """Wait until the job makes progress; the sizes of its first few progress events."""
    call = client.stub.WatchJob(scan_pb2.WatchJobRequest(job_id=job_id))
    sizes: list[int] = []
    try:
        async with asyncio.timeout(60):
            async for event in call:
                if event.WhichOneof("kind") == "progress" and event.progress.files_done:
                    sizes.append(event.ByteSize())
                    if len(sizes) >= 5:
                        break
    finally:
        call.cancel()
    return sizes


async def _bare(ctx: Context, count: int, event_bytes: int) -> dict[str, Any]:
    server = bare_server(ctx, "push", "push", "--rate", "10", "--event-bytes", str(event_bytes))
    try:
        await asyncio.sleep(0.3)
        return await _subscribe(ctx, server, WATCH_METHOD, b"", count, 0)
    finally:
        await asyncio.to_thread(server.stop)
