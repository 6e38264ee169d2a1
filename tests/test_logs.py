"""Structured logs: a real server with `--log-format json` writes one JSON object per stderr line,
one per job state change with the job's id, path, attempt and counts, and never a token."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from pathlib import Path
from typing import Any

import grpc
import pytest

from mediascan.client import ScanClient
from mediascan.client.errors import MediascanError
from mediascan.server.logs import (
    JsonFormatter,
    TextFormatter,
    configure_logging,
    redact,
    register_secrets,
)
from mediascan.server.testing import make_many
from mediascan.v1 import scan_pb2

TIMEOUT = 60.0
TOKEN = "log-test-token-" + "c" * 24
WRONG = "wrong-token-" + "d" * 24


def json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of `text` as JSON (fails on a line that is not)."""
    documents = []
    for line in text.splitlines():
        document = json.loads(line)
        assert isinstance(document, dict), line
        documents.append(document)
    return documents


async def test_a_jobs_state_changes_are_json_lines(spawn_server: Any, tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    make_many(folder, 3)
    (folder / "broken.mp4").write_bytes(b"\x00" * 100)
    server = await spawn_server("--log-format", "json")
    async with ScanClient(server.address) as client:
        submitted = await client.submit_scan(str(folder))
        job = await asyncio.wait_for(client.wait(submitted.job_id), TIMEOUT)
    assert job.state == scan_pb2.JOB_STATE_SUCCEEDED
    server.terminate()
    assert await server.wait(30) == 0

    records = json_lines(server.stderr_text())
    for record in records:
        assert {"time", "level", "logger", "message"} <= record.keys()
    mine = [r for r in records if r.get("job_id") == submitted.job_id]
    # Accepting a job is a DEBUG line (a busy server accepts thousands a second); from the
    # start on, each state change is an INFO line.
    assert [r["state"] for r in mine] == ["RUNNING", "SUCCEEDED"]
    for record in mine:
        assert record["path"] == str(folder)
        assert record["attempt"] == 1
        assert record["logger"] == "mediascan.server.engine"
        assert submitted.job_id in record["message"]
        for count in ("files", "added", "updated", "unchanged", "removed", "failed"):
            assert isinstance(record[count], int), (count, record)
    final = mine[-1]
    assert (final["files"], final["added"], final["failed"]) == (4, 3, 1)
    assert final["level"] == "INFO"
    assert any(r["message"] == "stopped" for r in records)


async def test_tokens_never_reach_the_log(spawn_server: Any, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(TOKEN + "\n")
    tokens.chmod(0o600)
    server = await spawn_server(
        "--log-format", "json", "--log-level", "DEBUG", "--auth-token-file", str(tokens)
    )
    async with ScanClient(server.address, token=TOKEN) as client:
        assert [j async for j in client.list_jobs()] == []
    async with ScanClient(server.address, token=WRONG) as client:
        with pytest.raises(MediascanError) as raised:
            await client.get_job("j_x")
        assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED
    server.terminate()
    assert await server.wait(30) == 0
    text = server.stderr_text()
    records = json_lines(text)
    assert any("UNAUTHENTICATED" in r["message"] for r in records)  # the refusal is logged...
    assert TOKEN not in text  # ...but no token, right or wrong
    assert WRONG not in text
    assert "c" * 24 not in text


def _record(message: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("mediascan.test", logging.INFO, __file__, 1, message, None, None)
    record.__dict__.update(extra)
    return record


def test_formatters_carry_the_extra_fields() -> None:
    record = _record("job j_1 SUCCEEDED", job_id="j_1", path="/media/my videos", added=3)
    document = json.loads(JsonFormatter().format(record))
    assert document["message"] == "job j_1 SUCCEEDED"
    assert (document["job_id"], document["path"], document["added"]) == (
        "j_1",
        "/media/my videos",
        3,
    )
    line = TextFormatter().format(record)
    assert line.endswith('job j_1 SUCCEEDED job_id=j_1 path="/media/my videos" added=3')


def test_secrets_are_masked_as_a_second_line_of_defence() -> None:
    assert redact(f"metadata authorization: Bearer {TOKEN}") == (
        "metadata authorization: Bearer [REDACTED]"
    )
    assert redact(f"sent bearer {TOKEN}, then more") == "sent bearer [REDACTED], then more"
    assert redact(f"('authorization', '{TOKEN}')") == "('authorization', '[REDACTED]')"
    register_secrets([TOKEN])  # as the server does with the tokens it accepts
    line = JsonFormatter().format(_record(f"oops {TOKEN}", header=f"Bearer {TOKEN}"))
    assert TOKEN not in line
    assert TOKEN not in TextFormatter().format(_record(f"Bearer {TOKEN}"))


def test_configure_logging_writes_json_to_the_stream() -> None:
    stream = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO", "json", stream)
        logging.getLogger("mediascan.test").info("hello %s", "there", extra={"job_id": "j_2"})
        logging.getLogger("mediascan.test").debug("not shown")
    finally:
        root.handlers[:], _ = saved
        root.setLevel(saved[1])
    (document,) = json_lines(stream.getvalue())
    assert document["message"] == "hello there"
    assert document["job_id"] == "j_2"
