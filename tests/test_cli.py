"""Acceptance tests of the `mediascan` command line: the real console script, run as a
subprocess against a real server, judged by its exit status and output."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import pty
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from mediascan.server.testing import Corpus

BIN = Path(sys.executable).parent
MEDIASCAN = BIN / "mediascan"
TIMEOUT = 60.0


@dataclasses.dataclass
class Result:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASCAN_")}
    env.update(extra)
    return env


async def run(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> Result:
    """Run `mediascan *args` (off the event loop's way: the in-process server keeps serving)."""
    process = await asyncio.create_subprocess_exec(
        str(MEDIASCAN),
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=cwd,
        env=env if env is not None else _env(),
    )
    try:
        async with asyncio.timeout(TIMEOUT):
            stdout, stderr = await process.communicate()
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode is not None
    return Result(process.returncode, stdout.decode(), stderr.decode())


def assert_no_traceback(result: Result) -> None:
    assert "Traceback" not in result.stderr, result.stderr
    assert "Traceback" not in result.stdout, result.stdout


@pytest.fixture
def free_address() -> str:
    """An address nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


async def test_help_documents_the_exit_codes() -> None:
    for args in (["--help"], ["watch", "--help"], ["scan", "--help"]):
        result = await run(*args)
        assert result.code == 0
        for line in ("0 ", "1 ", "2 ", "3 ", "4 "):
            assert f"\n  {line}" in result.stdout, (args, result.stdout)
        assert "TIMED_OUT" in result.stdout
        assert "CANCELLED" in result.stdout


async def test_python_dash_m_runs_the_cli() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mediascan.client",
        "--help",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(TIMEOUT):
        stdout, _ = await process.communicate()
    assert process.returncode == 0
    assert b"usage: mediascan" in stdout


async def test_scan_watch_prints_a_summary_and_exits_0(server: Any, corpus: Corpus) -> None:
    result = await run("scan", str(corpus.root), "--watch", "--server", server.address)

    assert result.code == 0, result
    assert_no_traceback(result)
    job_line, summary, counts, *rest = result.stdout.splitlines()
    assert job_line.startswith("job j_")
    assert summary.startswith("job j_") and " SUCCEEDED in " in summary
    assert summary.endswith(f": {corpus.root.resolve()}")
    assert f"{len(corpus.video_files)} files: " in counts
    assert " added, 0 updated, 0 unchanged, 0 removed, " in counts
    assert rest[0].startswith("  file errors (")
    assert any(str(path) in "\n".join(rest) for path in corpus.bad)


async def test_scan_makes_a_relative_path_absolute(server: Any, corpus: Corpus) -> None:
    result = await run(
        "--server", server.address, "scan", corpus.root.name, "--json", cwd=corpus.root.parent
    )

    assert result.code == 0, result
    response = result.json()
    assert response["jobId"].startswith("j_")
    assert response["job"]["path"] == str(corpus.root.resolve())
    assert response["job"]["state"] == "JOB_STATE_QUEUED"


async def test_scan_passes_its_options(server: Any, corpus: Corpus) -> None:
    args = [
        "scan",
        str(corpus.root),
        "--no-recursive",
        "--follow-symlinks",
        "--full",
        "--priority",
        "7",
        "--timeout",
        "1m",
        "--request-id",
        "cli-test-1",
        "--json",
    ]
    result = await run(*args, env=_env(MEDIASCAN_SERVER=server.address))

    assert result.code == 0, result
    job = result.json()["job"]
    assert job["options"] == {
        "followSymlinks": True,
        "timeout": "60s",
        "priority": 7,
        "full": True,
    }
    assert job["requestId"] == "cli-test-1"
    again = await run(*args, "--server", server.address)
    assert again.code == 0, again
    assert again.json()["jobId"] == result.json()["jobId"]


async def test_json_job_and_ndjson_watch(server: Any, corpus: Corpus) -> None:
    submitted = await run("--json", "--server", server.address, "scan", str(corpus.root), "--full")
    job_id = submitted.json()["jobId"]

    watched = await run("watch", job_id, "--json", "--server", server.address)
    assert watched.code == 0, watched
    events = [json.loads(line) for line in watched.stdout.splitlines()]
    assert "snapshot" in events[0]
    assert all(event["jobId"] == job_id for event in events)
    sequences = [int(event["sequence"]) for event in events]
    assert sequences == sorted(set(sequences))
    last = events[-1]  # the terminal state change, or the snapshot of a job already finished
    final = last["stateChange"]["job"] if "stateChange" in last else last["snapshot"]["job"]
    assert final["state"] == "JOB_STATE_SUCCEEDED"

    shown = await run("job", job_id, "--json", "--server", server.address)
    assert shown.code == 0
    job = shown.json()
    assert job["jobId"] == job_id
    assert job["state"] == "JOB_STATE_SUCCEEDED"
    assert job["result"]["filesTotal"] == len(corpus.video_files)


async def test_human_job_output(server: Any, corpus: Corpus) -> None:
    submitted = await run("scan", str(corpus.root), "--json", "--server", server.address)
    job_id = submitted.json()["jobId"]
    await run("watch", job_id, "--server", server.address)

    shown = await run("job", job_id, "--server", server.address)

    assert shown.code == 0
    assert job_id in shown.stdout
    assert "SUCCEEDED" in shown.stdout
    assert str(corpus.root.resolve()) in shown.stdout


async def test_unknown_job_prints_one_error_line_and_exits_2(server: Any) -> None:
    for command in ("job", "watch", "cancel", "delete"):
        result = await run(command, "j_nope", "--server", server.address)

        assert result.code == 2, (command, result)
        assert result.stdout == ""
        assert result.stderr.startswith("error: NOT_FOUND: "), result.stderr
        assert "j_nope" in result.stderr.splitlines()[0]
        assert_no_traceback(result)


async def test_invalid_argument_lists_the_field_violations(server: Any, corpus: Corpus) -> None:
    result = await run("scan", str(corpus.root), "--priority", "1000", "--server", server.address)

    assert result.code == 2, result
    # The message names the field; the violation is not printed a second time.
    assert result.stderr.splitlines() == [
        "error: INVALID_ARGUMENT: priority: 1000 is out of range: use -100 to 100"
    ]
    assert_no_traceback(result)


async def test_unreachable_server(free_address: str) -> None:
    for args in (["jobs"], ["scan", ".", "--watch"], ["watch", "j_x", "--json"]):
        result = await run(*args, "--server", free_address)

        assert result.code == 2, (args, result)
        host = free_address.rpartition(":")[0]
        assert result.stderr == (
            f"error: cannot connect to {free_address}: nothing accepts connections there "
            f"({host}: Connection refused): is the server running (start it with 'make run'), "
            "and listening on this address (its --listen)?\n"
        )


async def test_server_from_the_environment(server: Any) -> None:
    result = await run("jobs", "--json", env=_env(MEDIASCAN_SERVER=server.address))
    assert result.code == 0, result
    assert result.json() == {"jobs": []}


async def test_bad_usage_exits_2() -> None:
    result = await run("scan", "/x", "--timeout", "soon")
    assert result.code == 2
    assert "invalid duration 'soon'" in result.stderr
    assert_no_traceback(result)


async def test_jobs_and_videos_tables(server: Any, corpus: Corpus) -> None:
    result = await run("scan", str(corpus.root), "--watch", "--server", server.address)
    job_id = result.stdout.split()[1]

    jobs = await run("jobs", "--server", server.address)
    assert jobs.code == 0
    assert job_id in jobs.stdout
    assert "SUCCEEDED" in jobs.stdout

    succeeded = await run("jobs", "--state", "succeeded", "--json", "--server", server.address)
    assert [job["jobId"] for job in succeeded.json()["jobs"]] == [job_id]
    queued = await run("jobs", "--state", "queued", "--json", "--server", server.address)
    assert queued.json() == {"jobs": []}

    videos = await run("videos", "--prefix", str(corpus.root), "--server", server.address)
    assert videos.code == 0
    for path in corpus.valid:
        assert str(path) in videos.stdout
    assert "320x240" in videos.stdout
    assert "h264" in videos.stdout

    limited = await run("videos", "--limit", "2", "--json", "--server", server.address)
    assert len(limited.json()["videos"]) == 2
    one = await run("videos", "--limit", "1", "--server", server.address)
    assert "--limit 0" in one.stderr


async def test_videos_prefix_is_made_absolute(server: Any, corpus: Corpus) -> None:
    await run("scan", str(corpus.root), "--watch", "--server", server.address)

    result = await run(
        "videos", "--prefix", "old", "--json", "--server", server.address, cwd=corpus.root
    )

    paths = {video["path"] for video in result.json()["videos"]}
    expected = {str(p) for p in corpus.valid if p.is_relative_to(corpus.root / "old")}
    assert paths == expected


async def test_cancel_then_watch_exits_4_and_delete(server: Any, big_folder: Path) -> None:
    job_id = (await run("scan", str(big_folder), "--json", "--server", server.address)).json()[
        "jobId"
    ]
    deleted_early = await run("delete", job_id, "--server", server.address)
    assert deleted_early.code == 2
    assert deleted_early.stderr.startswith("error: FAILED_PRECONDITION: ")

    cancelled = await run("cancel", job_id, "--server", server.address)
    assert cancelled.code == 0, cancelled
    watched = await run("watch", job_id, "--server", server.address)
    assert watched.code == 4, watched
    assert f"job {job_id} CANCELLED" in watched.stdout

    deleted = await run("delete", job_id, "--json", "--server", server.address)
    assert deleted.code == 0
    assert deleted.json() == {}
    gone = await run("job", job_id, "--server", server.address)
    assert gone.code == 2


async def test_timed_out_scan_exits_3(server: Any, big_folder: Path) -> None:
    result = await run(
        "scan", str(big_folder), "--watch", "--timeout", "250ms", "--server", server.address
    )

    assert result.code == 3, result
    assert " TIMED_OUT in " in result.stdout
    assert "error: DEADLINE_EXCEEDED" in result.stdout


async def test_live_progress_bar_on_a_terminal(server: Any, corpus: Corpus) -> None:
    """On a terminal, `scan --watch` draws a live bar, then the same summary."""
    controller, terminal = pty.openpty()
    env = _env(TERM="xterm-256color", COLUMNS="120", LINES="40")
    process = await asyncio.create_subprocess_exec(
        str(MEDIASCAN),
        "scan",
        str(corpus.root),
        "--watch",
        "--full",
        "--server",
        server.address,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=terminal,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    os.close(terminal)

    def read_all() -> bytes:
        chunks = []
        with contextlib.suppress(OSError):  # EIO once the child has closed the terminal
            while chunk := os.read(controller, 65536):
                chunks.append(chunk)
        return b"".join(chunks)

    try:
        async with asyncio.timeout(TIMEOUT):
            output, (_, stderr) = await asyncio.gather(
                asyncio.to_thread(read_all), process.communicate()
            )
    finally:
        os.close(controller)

    assert process.returncode == 0, (output, stderr)
    text = output.decode(errors="replace")
    assert "\x1b[" in text  # drawn with terminal control sequences
    assert " SUCCEEDED in " in text
    assert "Traceback" not in text
