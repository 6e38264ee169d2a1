"""1. Submit throughput and latency: SubmitScan on a real `mediascan-server` (a real SQLite database
on disk, every submit committed before it returns) against a bare grpc.aio unary echo server
answering with the same messages. The same load generator process drives both: 64 calls in flight
over 4 connections, for a warm-up and then a measured window.

Submits go to distinct empty folders (an identical submit would join the active job without a
write), and the server runs with `--max-queued 1000000` so the queue bound never refuses one, and
`--workers 1`. The accepted jobs run meanwhile (each a scan of an empty folder): on a 2-core
machine that work competes with the submits for the CPU, and the table says how many ran.

A second mediascan figure, "worker parked", shows the submits alone: before the load, the one
worker starts a job whose only file hangs in the prober (the test prober of
`mediascan.server.testing_prober`, with a 1-hour probe timeout; a hanging prober sleeps and
costs no CPU), so every accepted job stays queued and nothing but the submits runs.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from mediascan.server.testing import make_video
from mediascan.v1 import scan_pb2

from .bare import ECHO_METHOD
from .common import (
    TERMINAL,
    Client,
    Context,
    Row,
    Sizes,
    Worker,
    bare_server,
    cpu_seconds,
    folder_name,
    job_counts,
    median_of,
    mediascan_server,
    paired,
)

BENCH = "1 submit"
SUBMIT_METHOD = "/mediascan.v1.ScanService/SubmitScan"
PARK_MARKER = "park-the-worker"


def figures(sizes: Sizes) -> list[str]:
    return [
        "requests/s",
        "latency p50 (ms)",
        "latency p99 (ms)",
        "server CPU per request (µs)",
        "requests/s, worker parked",
        "server CPU per request, worker parked (µs)",
    ]


async def run(ctx: Context) -> list[Row]:
    sizes = ctx.sizes
    root = ctx.scratch / "submit"
    root.mkdir()
    for index in range(sizes.submit_folders + 1):  # the last one: the size sample
        (root / folder_name(index)).mkdir()
    park = ctx.scratch / "submit-park"
    await asyncio.to_thread(
        make_video, park / f"{PARK_MARKER}.mp4", width=64, height=48, seconds=0.2
    )
    ctx.log(f"{BENCH}: {sizes.submit_folders:,} empty folders under {root}")
    runs: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = []
    response = b""
    for number in range(1, sizes.runs + 1):
        ctx.log(f"{BENCH}: run {number}/{sizes.runs}: mediascan-server")
        mine, response = await _mediascan(ctx, root, response, None)
        ctx.log(f"{BENCH}: run {number}/{sizes.runs}: mediascan-server, worker parked")
        parked, _ = await _mediascan(ctx, root, response, park)
        ctx.log(f"{BENCH}: run {number}/{sizes.runs}: bare echo ({len(response)} B replies)")
        bare = await _echo(ctx, root, response)
        ctx.log(
            f"{BENCH}: run {number}: {mine['rps']:,.0f} ({parked['rps']:,.0f} parked) vs "
            f"{bare['rps']:,.0f} requests/s; {mine['jobs_done']} jobs ran meanwhile"
        )
        runs.append((mine, parked, bare))
    echo = "bare grpc.aio echo"
    jobs_done = median_of(m["jobs_done"] for m, _, _ in runs)
    errors = sum(sum(m["errors"].values()) + sum(p["errors"].values()) for m, p, _ in runs)
    cpu = median_of(m["server_cpu"] for m, _, _ in runs)
    echo_cpu = median_of(b["server_cpu"] for _, _, b in runs)
    note = (
        f"{sizes.submit_concurrency} in flight over {sizes.submit_channels} connections, "
        f"{sizes.submit_duration:g} s after {sizes.submit_warmup:g} s warm-up; "
        f"{jobs_done:,.0f} accepted jobs ran during a run (median) and competed for the CPU; "
        f"server CPU {cpu:.2f} cores (echo {echo_cpu:.2f})"
        + (f"; {errors} failed submits" if errors else "")
    )
    keep = ("server_cpu", "jobs_done", "errors", "wrapped", "sent")
    details = [
        {
            **{k: m.get(k) for k in keep},
            **{f"parked_{k}": p.get(k) for k in keep},
            **{f"baseline_{k}": b.get(k) for k in keep},
        }
        for m, p, b in runs
    ]
    return [
        paired(
            BENCH,
            "requests/s",
            [(m["rps"], b["rps"]) for m, _, b in runs],
            baseline_name=echo,
            target=(">=", 0.7),
            note=note,
            details=details,
        ),
        paired(
            BENCH,
            "latency p50 (ms)",
            [(m["p50_ms"], b["p50_ms"]) for m, _, b in runs],
            baseline_name=echo,
        ),
        paired(
            BENCH,
            "latency p99 (ms)",
            [(m["p99_ms"], b["p99_ms"]) for m, _, b in runs],
            baseline_name=echo,
        ),
        paired(
            BENCH,
            "server CPU per request (µs)",
            [(m["cpu_per_request_us"], b["cpu_per_request_us"]) for m, _, b in runs],
            baseline_name=echo,
            note="user + system time of all the server's threads over the measured window, per "
            "request completed in it; steadier than requests/s on a shared machine",
        ),
        paired(
            BENCH,
            "requests/s, worker parked",
            [(p["rps"], b["rps"]) for _, p, b in runs],
            baseline_name=echo,
            note="the one worker held by a job whose file hangs in the prober: no job runs "
            "during the measurement, only the submits",
        ),
        paired(
            BENCH,
            "server CPU per request, worker parked (µs)",
            [(p["cpu_per_request_us"], b["cpu_per_request_us"]) for _, p, b in runs],
            baseline_name=echo,
        ),
    ]


def load_args(sizes: Sizes, address: str, method: str, root: Path) -> list[str]:
    return [
        "unary",
        "--target",
        address,
        "--method",
        method,
        "--root",
        str(root),
        "--folders",
        str(sizes.submit_folders),
        "--channels",
        str(sizes.submit_channels),
        "--concurrency",
        str(sizes.submit_concurrency),
        "--warmup",
        str(sizes.submit_warmup),
        "--duration",
        str(sizes.submit_duration),
    ]


async def _mediascan(
    ctx: Context, root: Path, response: bytes, park: Path | None
) -> tuple[dict[str, Any], bytes]:
    """One measurement of a fresh server; with `park`, its worker is held by a hanging job."""
    sizes = ctx.sizes
    args = ["--max-queued", "1000000", "--workers", "1", "--shutdown-grace", "1s"]
    fault = None
    if park is not None:
        args += ["--probe-timeout", "1h"]
        fault = f"hang:{PARK_MARKER}"
    server, folder = mediascan_server(ctx, "submit", *args, prober_fault=fault)
    try:
        async with Client(server.address) as client:
            sample = scan_pb2.SubmitScanRequest(path=f"{root}/{folder_name(sizes.submit_folders)}")
            answer = await client.stub.SubmitScan(sample, timeout=30)
            response = response or answer.SerializeToString()
            await client.wait(answer.job_id, 30)
            if park is not None:
                parked = await client.submit(park)
                await _until_running(client, parked.job_id)
        worker = await Worker.start(
            ctx, "submit-loadgen", *load_args(sizes, server.address, SUBMIT_METHOD, root)
        )
        result = await measure(worker, server.pid, sizes)
    finally:
        await asyncio.to_thread(server.stop)
    counts = job_counts(folder / "mediascan.db")
    result["jobs"] = counts
    result["jobs_done"] = counts.get("JOB_STATE_SUCCEEDED", 0) - 1  # not the sample's
    return result, response


async def _until_running(client: Client, job_id: str) -> None:
    for _ in range(300):
        job = await client.stub.GetJob(scan_pb2.GetJobRequest(job_id=job_id), timeout=30)
        if job.state == scan_pb2.JOB_STATE_RUNNING and job.progress.files_found:
            return
        if job.state in TERMINAL:
            raise RuntimeError(f"the parking job ended: {job}")
        await asyncio.sleep(0.05)
    raise RuntimeError("the parking job did not start")


async def _echo(ctx: Context, root: Path, response: bytes) -> dict[str, Any]:
    sizes = ctx.sizes
    server = bare_server(ctx, "echo", "echo", "--response-hex", response.hex())
    try:
        worker = await Worker.start(
            ctx, "echo-loadgen", *load_args(sizes, server.address, ECHO_METHOD, root)
        )
        result = await measure(worker, server.pid, sizes)
    finally:
        await asyncio.to_thread(server.stop)
    return result


async def measure(worker: Worker, pid: int, sizes: Sizes) -> dict[str, Any]:
    """The load generator's result, plus the server's CPU time (all its threads) over the
    measured window: cores busy, and CPU time per request completed in the window."""
    limit = sizes.submit_warmup + sizes.submit_duration + 120
    try:
        await worker.expect("window-start", limit)
        cpu_before, started = cpu_seconds(pid) or 0.0, time.monotonic()
        await worker.expect("window-end", limit)
        cpu, wall = (cpu_seconds(pid) or 0.0) - cpu_before, time.monotonic() - started
        result = await worker.result(limit)
    finally:
        worker.kill()
    result["server_cpu"] = cpu / max(1e-9, wall)
    result["cpu_per_request_us"] = cpu / max(1, result["completed"]) * 1e6
    result.pop("latencies_us", None)
    return result
