"""The Prometheus endpoint, scraped over real HTTP: the counters move by exactly what a scan did."""

from __future__ import annotations

import asyncio
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mediascan.server.testing import event_state, final_job, make_many
from mediascan.v1 import scan_pb2

TIMEOUT = 60.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


async def scrape(address: str) -> tuple[str, Samples]:
    """GET /metrics (off the event loop: the server runs on it) and parse every sample."""

    def get() -> tuple[str, str]:
        with urllib.request.urlopen(f"http://{address}/metrics", timeout=TIMEOUT) as response:
            return response.headers["Content-Type"], response.read().decode()

    content_type, text = await asyncio.to_thread(get)
    assert content_type.startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def total(samples: Samples, name: str) -> float:
    return sum(v for (n, _), v in samples.items() if n == name)


def rpc(method: str, code: str = "OK", kind: str = "unary") -> dict[str, str]:
    return {
        "grpc_service": "mediascan.v1.ScanService",
        "grpc_method": method,
        "grpc_type": kind,
        "grpc_code": code,
    }


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Four good videos, one broken file with a video name, one file that is no video."""
    root = tmp_path / "videos"
    make_many(root, 4)
    (root / "broken.mkv").write_bytes(b"not a matroska file at all" * 10)
    (root / "notes.txt").write_text("not scanned")
    return root


async def test_metrics_move_by_what_a_scan_did(
    make_server: Any, connect: Any, folder: Path
) -> None:
    server = await make_server(metrics_listen="127.0.0.1:0")
    assert server.metrics_address.startswith("127.0.0.1:")
    stub = await connect(server.address)
    _, before = await scrape(server.metrics_address)

    submitted = await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(folder)))
    job = await final_job(stub, submitted.job_id, timeout=TIMEOUT)  # follows WatchJob
    assert job.state == scan_pb2.JOB_STATE_SUCCEEDED
    assert (job.result.added, job.result.failed) == (4, 1)
    with pytest.raises(grpc.aio.AioRpcError):
        await stub.GetJob(scan_pb2.GetJobRequest(job_id="j_unknown"))

    text, after = await scrape(server.metrics_address)

    def delta(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert delta("mediascan_jobs_submitted_total") == 1
    assert delta("mediascan_jobs_finished_total", state="SUCCEEDED") == 1
    assert total(after, "mediascan_jobs_finished_total") == 1
    assert delta("mediascan_job_duration_seconds_count", state="SUCCEEDED") == 1
    assert value(after, "mediascan_job_duration_seconds_sum", state="SUCCEEDED") > 0
    assert delta("mediascan_files_probed_total") == 5  # the text file is never probed
    assert (
        total(after, "mediascan_probe_errors_total") - total(before, "mediascan_probe_errors_total")
        == 1
    )
    assert delta("mediascan_probe_duration_seconds_count") == 5
    assert value(after, "mediascan_jobs_queued") == 0
    assert value(after, "mediascan_jobs_running") == 0
    assert value(after, "mediascan_watchers_active") == 0

    assert delta("grpc_server_handled_total", **rpc("SubmitScan")) == 1
    assert delta("grpc_server_handled_total", **rpc("WatchJob", kind="server_stream")) >= 1
    assert delta("grpc_server_handled_total", **rpc("GetJob", "NOT_FOUND")) == 1
    assert delta("grpc_server_handling_seconds_count", **rpc("SubmitScan")) == 1
    assert "process_resident_memory_bytes" in text  # the standard process metrics come along


async def test_gauges_show_a_running_job_and_its_watchers(
    make_server: Any, connect: Any, big_folder: Path
) -> None:
    server = await make_server(metrics_listen="127.0.0.1:0", workers=1)
    stub = await connect(server.address)
    running = await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(big_folder)))
    watch = stub.WatchJob(scan_pb2.WatchJobRequest(job_id=running.job_id))
    async with asyncio.timeout(TIMEOUT):
        while True:  # until the job is seen running (a state change, or any progress)
            event = await watch.read()
            if event_state(event) == scan_pb2.JOB_STATE_RUNNING or event.HasField("progress"):
                break
    queued = await stub.SubmitScan(
        scan_pb2.SubmitScanRequest(path=str(big_folder), recursive=False)
    )
    _, samples = await scrape(server.metrics_address)
    assert value(samples, "mediascan_jobs_running") == 1
    assert value(samples, "mediascan_jobs_queued") == 1
    assert value(samples, "mediascan_watchers_active") == 1

    for job_id in (queued.job_id, running.job_id):
        await stub.CancelJob(scan_pb2.CancelJobRequest(job_id=job_id))
    async with asyncio.timeout(TIMEOUT):  # the stream ends by itself after the terminal event
        while await watch.read() is not grpc.aio.EOF:
            pass
    _, samples = await scrape(server.metrics_address)
    assert value(samples, "mediascan_jobs_finished_total", state="CANCELLED") == 2
    assert value(samples, "mediascan_jobs_running") == 0
    assert value(samples, "mediascan_jobs_queued") == 0
    assert value(samples, "mediascan_watchers_active") == 0
    watch_ok = rpc("WatchJob", "OK", "server_stream")
    assert value(samples, "grpc_server_handled_total", **watch_ok) == 1


async def test_metrics_are_off_by_default(server: Any) -> None:
    assert server.metrics is None
    assert server.metrics_address == ""


async def test_a_metrics_port_in_use_stops_the_server(make_server: Any, tmp_path: Path) -> None:
    first = await make_server(metrics_listen="127.0.0.1:0")
    with pytest.raises(Exception, match="--metrics-listen"):
        await make_server(metrics_listen=first.metrics_address, db=tmp_path / "second.db")
