"""Acceptance tests of the `mediascan` command line: the real console script, run as a
subprocess against a real server, judged by its exit status and output."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import pty
import re
import sys
from pathlib import Path
from typing import Any

import pytest

from mediascan.client.display import counts_line, format_seconds
from mediascan.server.testing import Corpus, library_rows, store_videos
from mediascan.v1 import scan_pb2

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


async def test_several_servers_the_first_unreachable(
    server: Any, free_address: str, corpus: Corpus
) -> None:
    servers = f"{free_address},{server.address}"
    scanned = await run("scan", str(corpus.root), "--watch", "--server", servers)
    assert scanned.code == 0, scanned
    assert " SUCCEEDED in " in scanned.stdout
    assert scanned.stderr == ""

    listed = await run("jobs", "--json", env=_env(MEDIASCAN_SERVER=servers))
    assert listed.code == 0, listed
    assert [job["jobId"] for job in listed.json()["jobs"]] == [scanned.stdout.split()[1]]


async def test_every_server_unreachable_is_one_line_each(free_addresses: Any) -> None:
    first, second = free_addresses(2)
    for args in (["jobs"], ["watch", "j_x"]):
        result = await run(*args, "--server", f"{first},{second}")

        assert result.code == 2, (args, result)
        assert_no_traceback(result)
        lines = result.stderr.splitlines()
        assert [line.split(": nothing accepts connections there")[0] for line in lines] == [
            f"error: cannot connect to {first}",
            f"error: cannot connect to {second}",
        ], result.stderr


async def test_an_empty_server_address_is_refused() -> None:
    result = await run("jobs", "--server", "127.0.0.1:1,,127.0.0.1:2")
    assert result.code == 2
    assert result.stderr == (
        "error: an empty server address in '127.0.0.1:1,,127.0.0.1:2': give "
        "host:port[,host:port...]\n"
    )


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


async def run_on_terminal(*args: str, columns: int = 120) -> tuple[int, str, bytes]:
    """Run `mediascan *args` with a pseudo-terminal as its stdout, `columns` wide: exit status,
    what it drew, and stderr."""
    controller, terminal = pty.openpty()
    env = _env(TERM="xterm-256color", COLUMNS=str(columns), LINES="40")
    process = await asyncio.create_subprocess_exec(
        str(MEDIASCAN),
        *args,
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
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace"), stderr


async def test_live_progress_bar_on_a_terminal(server: Any, corpus: Corpus) -> None:
    """On a terminal, `scan --watch` draws a live bar, then the same summary."""
    code, text, stderr = await run_on_terminal(
        "scan", str(corpus.root), "--watch", "--full", "--server", server.address
    )

    assert code == 0, (text, stderr)
    assert "\x1b[" in text  # drawn with terminal control sequences
    assert " SUCCEEDED in " in text
    assert "Traceback" not in text


# -- the command line's help, the videos filters, one video, JSON Lines, big tables, errors ------

SUBCOMMANDS = ("scan", "job", "watch", "cancel", "delete", "jobs", "videos", "video")
CONNECTION_OPTIONS = ("--server", "--token", "--token-file", "--tls-ca", "--tls", "--tls-cert")


def _help_sections(text: str) -> dict[str, list[str]]:
    """The sections of an argparse help text (`options:`, ...) and their lines."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for line in text.splitlines():
        if line.endswith(":") and not line.startswith(" "):
            current = sections.setdefault(line[:-1], [])
        elif line:
            current.append(line)
    return sections


async def test_help_lists_a_commands_own_options_then_the_connection_options() -> None:
    for command in SUBCOMMANDS:
        result = await run(command, "--help")
        assert result.code == 0, (command, result)
        sections = _help_sections(result.stdout)
        own = " ".join(sections["options"])
        connection = " ".join(sections["connection options"])
        assert result.stdout.count("connection options:") == 1
        assert "--json" in own, (command, own)
        for option in CONNECTION_OPTIONS:
            assert f"{option} " in connection, (command, option)
            assert f"{option} " not in own, (command, option)
        # Own options first, in the usage line too.
        usage = result.stdout[: result.stdout.index("\n\n")]
        assert usage.index("[--json]") < usage.index("[--server ADDR]"), usage
        # Each positional argument says what it is: a description after its name.
        for line in sections.get("positional arguments", []):
            if not line.startswith("   "):  # an argument's first line, not a continuation
                assert re.match(r"^  \S+\s{2,}\S", line), (command, line)
    top = _help_sections((await run("--help")).stdout)
    assert re.match(r"^  COMMAND\s{2,}\S", top["positional arguments"][0])
    for args in (["--help"], ["watch", "--help"], ["scan", "--help"]):
        text = " ".join((await run(*args)).stdout.split())
        assert "JSON Lines" in text and "compact" in text, args


async def test_watch_json_is_compact_json_lines(server: Any, corpus: Corpus) -> None:
    """`scan --watch --json` and `watch --json`: one event per line, compact (no spaces after
    the separators), as JSON Lines readers expect."""
    scanned = await run(
        "scan", str(corpus.root), "--full", "--watch", "--json", "--server", server.address
    )
    assert scanned.code == 0, scanned
    job_id = json.loads(scanned.stdout.splitlines()[0])["jobId"]
    watched = await run("watch", job_id, "--json", "--server", server.address)
    assert watched.code == 0, watched
    # The scan's events from its snapshot to its end; the ended job's watch: its snapshot.
    for result, least in ((scanned, 2), (watched, 1)):
        lines = result.stdout.splitlines()
        assert len(lines) >= least, result
        for line in lines:
            event = json.loads(line)
            assert event["jobId"] == job_id
            assert line == json.dumps(event, separators=(",", ":")), line


def _seconds(duration: str) -> float:
    """A proto3 JSON duration ("1.040s") in seconds."""
    return float(duration.removesuffix("s"))


async def test_videos_takes_every_list_videos_filter(server: Any, corpus: Corpus) -> None:
    await run("scan", str(corpus.root), "--watch", "--server", server.address)
    listed = await run("videos", "--limit", "0", "--json", "--server", server.address)
    everything = listed.json()["videos"]
    assert len(everything) == len(corpus.valid)

    async def paths(*filters: str) -> list[str]:
        result = await run("videos", *filters, "--json", "--server", server.address)
        assert result.code == 0, (filters, result)
        return [video["path"] for video in result.json().get("videos", [])]

    h264 = [v["path"] for v in everything if v.get("videoCodec") == "h264"]
    assert 0 < len(h264) < len(everything)
    assert await paths("--codec", "h264") == h264
    durations = sorted({_seconds(v["duration"]) for v in everything})
    for bound in (durations[0], durations[-1], 0.001, 3600.0):
        at_least = [v["path"] for v in everything if _seconds(v["duration"]) >= bound]
        at_most = [v["path"] for v in everything if _seconds(v["duration"]) <= bound]
        assert await paths("--min-duration", f"{bound}s") == at_least, bound
        assert await paths("--max-duration", f"{bound}s") == at_most, bound
    old = str(corpus.root / "old")
    both = [p for p in h264 if p.startswith(old + "/")]
    assert await paths("--prefix", old, "--codec", "h264", "--max-duration", "1h") == both

    nothing = await run(
        "videos", "--codec", "nope", "--min-duration", "2m", "--server", server.address
    )
    assert nothing.code == 0
    assert nothing.stdout == ""
    assert nothing.stderr == "no videos with codec nope of at least 2m\n"


async def test_video_by_id_or_path(server: Any, corpus: Corpus) -> None:
    await run("scan", str(corpus.root), "--watch", "--server", server.address)
    path = corpus.valid[0]  # clip-h264-aac.mp4: 320x240 h264 with stereo aac
    listed = await run("videos", "--prefix", str(path.parent), "--json", "--server", server.address)
    (expected,) = [v for v in listed.json()["videos"] if v["path"] == str(path)]

    by_id = await run("video", expected["videoId"], "--json", "--server", server.address)
    assert by_id.code == 0, by_id
    assert by_id.json() == expected
    relative = str(path.relative_to(corpus.root))
    by_path = await run("video", relative, "--json", "--server", server.address, cwd=corpus.root)
    assert by_path.json() == expected

    shown = await run("video", str(path), "--server", server.address)
    assert shown.code == 0, shown
    rows = {line[:12].strip(): line[12:].strip() for line in shown.stdout.splitlines()}
    assert rows["video"] == expected["videoId"]
    assert rows["path"] == str(path)
    assert rows["video codec"] == "h264"
    assert rows["picture"].startswith("320x240 at ")
    assert rows["audio"].startswith("aac 2ch, ")
    assert rows["by job"].startswith("j_")
    assert_no_traceback(shown)


async def test_each_error_prints_its_message_once(
    make_server: Any, corpus: Corpus, tmp_path: Path
) -> None:
    """Every error path: one `error: ...` line that says the message once (a field violation
    whose description the message already holds is not printed again)."""
    server = await make_server()
    roots = await make_server(db=tmp_path / "roots.db", allow_roots=(corpus.root / "old",))
    token_file = tmp_path / "token"
    token_file.write_text("secret\n")
    cases = [
        (server, ["scan", str(corpus.root / "nope")], "NOT_FOUND", "does not exist"),
        (server, ["scan", str(corpus.valid[0])], "FAILED_PRECONDITION", "is not a folder"),
        (roots, ["scan", str(corpus.root)], "PERMISSION_DENIED", "outside the folders"),
        (
            server,
            ["scan", str(corpus.root), "--priority", "1000"],
            "INVALID_ARGUMENT",
            "priority: ",
        ),
        (server, ["job", "j_nope"], "NOT_FOUND", '"j_nope" does not exist'),
        (server, ["watch", "j_nope"], "NOT_FOUND", '"j_nope" does not exist'),
        (server, ["cancel", "j_nope"], "NOT_FOUND", '"j_nope" does not exist'),
        (server, ["delete", "j_nope"], "NOT_FOUND", '"j_nope" does not exist'),
        (server, ["video", "/no/such.mp4"], "NOT_FOUND", "is not in the library"),
        (server, ["video", "v_1"], "NOT_FOUND", "is not in the library"),
        (server, ["video", "v_" + "9" * 30], "INVALID_ARGUMENT", "is not a video id"),
        (
            server,
            ["jobs", "--token", "x", "--token-file", str(token_file)],
            None,
            "give --token or --token-file, not both",
        ),
    ]
    for target, args, code, words in cases:
        result = await run(*args, "--server", target.address)

        assert result.code == 2, (args, result)
        assert result.stdout == ""
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"error: {code}: " if code else "error: "), (args, line)
        assert words in line, (args, line)
        message = line.split(": ", 2)[-1]
        assert result.stderr.count(message) == 1, (args, result.stderr)
        assert_no_traceback(result)


async def test_a_full_queue_says_when_to_retry_once(
    make_server: Any, big_folder: Path, small_folders: list[Path]
) -> None:
    server = await make_server(workers=1, max_queued=1, shutdown_grace=0)
    results = []
    for folder in (big_folder, *small_folders[:2]):
        results.append(await run("scan", str(folder), "--server", server.address))
    full = results[-1]  # the big job runs or waits, the next waits: no room for a third

    assert full.code == 2, results
    first, retry = full.stderr.splitlines()
    assert first.startswith("error: RESOURCE_EXHAUSTED: the queue is full (1 queued scans)")
    assert re.fullmatch(r"  retry in \S+", retry), retry
    for result in results[:-1]:
        await run("cancel", result.stdout.split()[1], "--server", server.address)


@pytest.mark.slow
async def test_a_large_videos_table_lists_every_row_aligned(
    make_server: Any, tmp_path: Path
) -> None:
    """`videos --limit 0` over 20,000 stored videos: every row, in path order, in aligned
    columns (`python -m bench --only cli_table` measures how long 50,000 take)."""
    rows = library_rows(20_000)
    await store_videos(tmp_path / "mediascan.db", rows)
    server = await make_server()

    result = await run("videos", "--limit", "0", "--server", server.address)

    assert result.code == 0, result.stderr
    header, rule, *lines = result.stdout.splitlines()
    assert header.split() == ["PATH", "DURATION", "RESOLUTION", "VIDEO", "AUDIO", "SIZE"]
    assert set(rule) == {"─"} and len(rule) >= len(header)
    assert [line.split()[0] for line in lines] == sorted(row.path for row in rows)
    size_end = len(header)  # right-justified: every size ends under the header's end
    assert {len(line) for line in lines} == {size_end}
    by_path = {row.path: row for row in rows}
    for line in lines[::997]:
        path, duration, resolution, codec, *_ = line.split()
        assert duration == format_seconds(by_path[path].duration_ns / 1e9)
        assert resolution == "1920x1080"
        assert codec == by_path[path].video_codec


async def test_a_table_on_a_narrow_terminal_folds_its_paths(
    make_server: Any, tmp_path: Path
) -> None:
    rows = library_rows(30)
    await store_videos(tmp_path / "mediascan.db", rows)
    server = await make_server()

    code, text, stderr = await run_on_terminal("videos", "--server", server.address, columns=80)

    assert code == 0, stderr
    header, rule, *lines = text.replace("\r\n", "\n").splitlines()
    assert max(len(line) for line in [header, rule, *lines]) <= 80
    width = header.index("DURATION") - 3  # the PATH column; durations fit under their header
    assert width < len(rows[0].path)  # folded: a path takes two lines
    assert len(lines) == 2 * len(rows)
    folded = "".join(line[:width].rstrip() for line in lines)
    assert folded == "".join(sorted(row.path for row in rows))


def test_the_counts_line_adds_up_to_the_files_with_moved_and_deferred() -> None:
    # A library's scan holds back a file still being written (deferred): the line names it,
    # so that its counts add up to the files found.
    job = scan_pb2.Job(
        result=scan_pb2.ScanResult(files_total=28, unchanged=26, moved=1, deferred=1)
    )
    assert counts_line(job) == (
        "28 files: 0 added, 0 updated, 26 unchanged, 0 removed, 1 moved, 0 failed, 1 deferred"
    )
    running = scan_pb2.Job(progress=scan_pb2.Progress(files_total=3, added=2, deferred=1))
    assert counts_line(running).endswith(
        "2 added, 0 updated, 0 unchanged, 0 removed, 0 failed, 1 deferred"
    )
    plain = scan_pb2.Job(result=scan_pb2.ScanResult(files_total=2, added=2))
    assert counts_line(plain) == "2 files: 2 added, 0 updated, 0 unchanged, 0 removed, 0 failed"
