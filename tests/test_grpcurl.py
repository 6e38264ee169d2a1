"""End to end with the real grpcurl binary: reflection, JSON names, unary and streaming calls."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

from mediascan.server.testing import Corpus


async def grpcurl_run(grpcurl: Path, *args: str, check: bool = True) -> str:
    """Run grpcurl off the event loop (the in-process server must keep answering)."""
    result = await asyncio.to_thread(
        subprocess.run,
        [str(grpcurl), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert result.returncode == 0, (args, result.returncode, result.stdout, result.stderr)
    return result.stdout


def json_stream(text: str) -> list[dict[str, Any]]:
    """grpcurl prints one JSON document per message, back to back."""
    decoder = json.JSONDecoder()
    documents = []
    index = 0
    text = text.strip()
    while index < len(text):
        document, end = decoder.raw_decode(text, index)
        documents.append(document)
        index = end
        while index < len(text) and text[index].isspace():
            index += 1
    return documents


def field(document: dict[str, Any], name: str) -> Any:
    """A field by its JSON name (lowerCamelCase) or its proto name."""
    camel = name.split("_")[0] + "".join(part.title() for part in name.split("_")[1:])
    return document.get(camel, document.get(name))


async def test_grpcurl_end_to_end(server: Any, grpcurl: Path, corpus: Corpus) -> None:
    address = server.address
    plain = ("-plaintext", "-max-time", "30")

    services = (await grpcurl_run(grpcurl, *plain, address, "list")).split()
    assert "mediascan.v1.ScanService" in services
    assert "grpc.health.v1.Health" in services

    methods = await grpcurl_run(grpcurl, *plain, address, "list", "mediascan.v1.ScanService")
    for rpc in ("SubmitScan", "GetJob", "WatchJob", "CancelJob", "ListJobs", "DeleteJob"):
        assert f"mediascan.v1.ScanService.{rpc}" in methods.split()

    described = await grpcurl_run(grpcurl, *plain, address, "describe", "mediascan.v1.ScanService")
    assert (
        "rpc WatchJob ( .mediascan.v1.WatchJobRequest ) returns ( stream .mediascan.v1.JobEvent )"
        in described
    )
    request_shape = await grpcurl_run(
        grpcurl, *plain, address, "describe", "mediascan.v1.SubmitScanRequest"
    )
    for name in ("path", "recursive", "timeout", "request_id", "priority"):
        assert f" {name} = " in request_shape, name

    submitted = json_stream(
        await grpcurl_run(
            grpcurl,
            *plain,
            "-d",
            json.dumps({"path": str(corpus.root), "timeout": "30s"}),
            address,
            "mediascan.v1.ScanService/SubmitScan",
        )
    )
    assert len(submitted) == 1
    job_id = field(submitted[0], "job_id")
    assert job_id and job_id.startswith("j_")
    job = submitted[0]["job"]
    assert job["state"] == "JOB_STATE_QUEUED"
    assert field(job, "options")["timeout"] == "30s"

    # WatchJob streams until the terminal event, then grpcurl exits 0. Resuming after event 1
    # (the job's creation) replays the whole run, however fast the scan was.
    events = json_stream(
        await grpcurl_run(
            grpcurl,
            *plain,
            "-d",
            json.dumps({"job_id": job_id, "after_sequence": 1}),
            address,
            "mediascan.v1.ScanService/WatchJob",
        )
    )
    sequences = [int(e["sequence"]) for e in events]
    assert sequences == list(range(2, 2 + len(events)))
    first_change = field(events[0], "state_change")
    assert (field(first_change, "from_state"), field(first_change, "to_state")) == (
        "JOB_STATE_QUEUED",
        "JOB_STATE_RUNNING",
    )
    errors = [field(e, "file_error") for e in events if field(e, "file_error")]
    assert sorted(e["path"] for e in errors) == sorted(str(p.resolve()) for p in corpus.bad)
    last = field(events[-1], "state_change")
    assert field(last, "to_state") == "JOB_STATE_SUCCEEDED"
    assert last["job"]["result"]["added"] == len(corpus.valid)

    # A plain WatchJob of the finished job: its final snapshot, then the stream ends.
    (snapshot,) = json_stream(
        await grpcurl_run(
            grpcurl,
            *plain,
            "-d",
            json.dumps({"job_id": job_id}),
            address,
            "mediascan.v1.ScanService/WatchJob",
        )
    )
    assert snapshot["snapshot"]["job"]["state"] == "JOB_STATE_SUCCEEDED"
    assert int(snapshot["sequence"]) == sequences[-1]

    got = json_stream(
        await grpcurl_run(
            grpcurl,
            *plain,
            "-d",
            json.dumps({"job_id": job_id}),
            address,
            "mediascan.v1.ScanService/GetJob",
        )
    )[0]
    assert got["state"] == "JOB_STATE_SUCCEEDED"
    result = got["result"]
    assert field(result, "files_total") == len(corpus.valid) + len(corpus.bad)
    assert result["failed"] == len(corpus.bad)
    assert len(field(result, "file_errors")) == len(corpus.bad)

    health = json_stream(await grpcurl_run(grpcurl, *plain, address, "grpc.health.v1.Health/Check"))
    assert health == [{"status": "SERVING"}]


async def test_grpcurl_shows_error_code_and_details(server: Any, grpcurl: Path) -> None:
    result = await asyncio.to_thread(
        subprocess.run,
        [
            str(grpcurl),
            "-plaintext",
            "-d",
            '{"path": "relative/dir"}',
            server.address,
            "mediascan.v1.ScanService/SubmitScan",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "InvalidArgument" in result.stderr
    assert "google.rpc.BadRequest" in result.stderr
    assert '"path"' in result.stderr or "path" in result.stderr


async def test_grpcurl_describe_shows_the_contract_comments(server: Any, grpcurl: Path) -> None:
    """The comments of scan.proto are the documentation grpcurl users read (issue 2, section 2)."""
    plain = ("-plaintext", "-max-time", "30")
    service = await grpcurl_run(
        grpcurl, *plain, server.address, "describe", "mediascan.v1.ScanService"
    )
    assert "Validates a scan, commits it to the job store and queues it" in service
    assert "Streams a job's events: first a snapshot of the job" in service
    request = await grpcurl_run(
        grpcurl, *plain, server.address, "describe", "mediascan.v1.SubmitScanRequest"
    )
    assert "Absolute path of the folder to scan" in request
