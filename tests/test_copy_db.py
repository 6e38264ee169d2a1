"""`mediascan-server copy-db`: a SQLite database made by a real server, copied into PostgreSQL,
answers every read as the SQLite server did and runs its queued jobs in their order; a job left
RUNNING by a killed server is copied QUEUED with its next attempt; the refusals (a file in use,
a schema too new, a target not empty) and a failure on the way write nothing; a big library
copies in bounded memory."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _library_helpers import (
    HANG_MARK,
    LONG_PROBE_TIMEOUT,
    QUEUED,
    QUICK_STOP,
    RUNNING,
    SUCCEEDED,
    all_videos,
    cancel,
    get_job,
    scan,
    set_fault,
    start_hung_blocker,
    submit,
    video_row,
)

from mediascan.server.dblock import DatabaseLock, DatabaseLocked
from mediascan.server.engine.recorder import requeue_change
from mediascan.server.store import SqliteStore
from mediascan.server.store.copydb import copy_database
from mediascan.server.store.postgres.store import PostgresStore
from mediascan.server.store.sqlite.schema import SCHEMA_VERSION
from mediascan.server.testing import (
    Corpus,
    final_job,
    library_rows,
    store_videos,
    wait_for_running,
    watch_events,
)
from mediascan.v1 import scan_pb2

BIN = Path(sys.executable).parent
COPY_TIMEOUT = 300.0
#: Videos of the big library: enough that holding them all at once would show in the memory.
BIG_LIBRARY = 200_000
#: The copy process's peak memory must stay below this. Measured: 44 MiB (the interpreter,
#: psycopg, protobuf and the server's modules); the 200,000 rows of the library held at once
#: as Python tuples would add 174 MiB.
PEAK_BOUND = 128 * 2**20
SUMMARY = re.compile(
    r"copied (?P<rows>[\d,]+) rows in (?P<seconds>[\d.]+)s \((?P<rate>[\d,]+) rows/s\), "
    r"peak memory (?P<peak>\d+) MiB"
)


@dataclasses.dataclass(frozen=True)
class CopyRun:
    """A finished `mediascan-server copy-db` process."""

    code: int
    stdout: str
    stderr: str

    def summary(self) -> re.Match[str]:
        match = SUMMARY.search(self.stdout)
        assert match, self.stdout
        return match


async def copy_db(source: Path, url: str) -> CopyRun:
    """Run `mediascan-server copy-db --from source --to url` and wait for it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASCAN_")}
    command = [str(BIN / "mediascan-server"), "copy-db", "--from", str(source), "--to", url]
    done = await asyncio.to_thread(
        subprocess.run,
        command,
        capture_output=True,
        text=True,
        env=env,
        stdin=subprocess.DEVNULL,
        timeout=COPY_TIMEOUT,
        check=False,
    )
    return CopyRun(code=done.returncode, stdout=done.stdout, stderr=done.stderr)


async def pg_rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(sql.encode())
        return await cursor.fetchall()


async def pg_tables(url: str) -> list[str]:
    rows = await pg_rows(
        url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename"
    )
    return [row[0] for row in rows]


async def pages(method: Any, request: Any, field: str) -> list[tuple[list[Any], str]]:
    """Every page of a listing (`method` asked `request`, then each next page): the items of
    each page, and its next_page_token."""
    found: list[tuple[list[Any], str]] = []
    while True:
        page = await method(request)
        found.append((list(getattr(page, field)), page.next_page_token))
        if not page.next_page_token:
            return found
        request.page_token = page.next_page_token


async def snapshot(stub: Any, job_id: str) -> scan_pb2.JobEvent:
    """The first event of a watch: the job's snapshot, without its time (that of the watch)."""
    (event,) = await watch_events(stub, job_id, stop_after=1, timeout=30)
    event.ClearField("event_time")
    return event


async def answers(stub: Any, finished: list[str], queued: list[str]) -> dict[str, Any]:
    """What a server answers about these jobs and its library."""
    videos = await all_videos(stub, page_size=2)
    replays = {}
    for job_id in finished:
        job = await get_job(stub, job_id)
        replays[job_id] = [
            await watch_events(stub, job_id, after_sequence=after, timeout=30)
            for after in (1, job.last_sequence // 2, job.last_sequence - 1)
        ]
    return {
        "jobs": {job_id: await get_job(stub, job_id) for job_id in finished + queued},
        "finished": await pages(stub.ListJobs, _jobs(SUCCEEDED), "jobs"),
        "queued": await pages(stub.ListJobs, _jobs(QUEUED), "jobs"),
        "order": [
            job.job_id for page, _ in await pages(stub.ListJobs, _jobs(), "jobs") for job in page
        ],
        "replays": replays,
        "snapshots": {job_id: await snapshot(stub, job_id) for job_id in queued},
        "file_errors": {
            job_id: await pages(
                stub.ListFileErrors,
                scan_pb2.ListFileErrorsRequest(job_id=job_id, page_size=2),
                "file_errors",
            )
            for job_id in finished
        },
        "video_pages": await pages(
            stub.ListVideos, scan_pb2.ListVideosRequest(page_size=3), "videos"
        ),
        "videos": videos,
        "by_id": [
            await stub.GetVideo(scan_pb2.GetVideoRequest(video_id=v.video_id)) for v in videos
        ],
        "by_path": [await stub.GetVideo(scan_pb2.GetVideoRequest(path=v.path)) for v in videos],
    }


def _jobs(state: int = 0) -> scan_pb2.ListJobsRequest:
    return scan_pb2.ListJobsRequest(state=state, page_size=1)


@pytest.mark.slow
async def test_the_copy_answers_as_the_sqlite_server_did_and_runs_its_queue(
    make_server: Any,
    connect: Any,
    corpus: Corpus,
    small_folders: list[Path],
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    set_fault(monkeypatch, "hang", HANG_MARK)
    options = {"workers": 1, "probe_timeout": LONG_PROBE_TIMEOUT, **QUICK_STOP}
    db = tmp_path / "mediascan.db"
    sqlite_server = await make_server(db=db, **options)
    stub = await connect(sqlite_server.address)
    finished = [
        (await scan(stub, corpus.root, request_id="copy-corpus")).job_id,
        # Verified by decoding: the copy keeps each video's health and fingerprint.
        (await scan(stub, small_folders[0], verify=scan_pb2.VERIFY_DECODE)).job_id,
    ]
    # One worker, held by a probe that hangs: the next jobs stay queued.
    blocker = await start_hung_blocker(stub, tmp_path / "hang")
    queued = [
        (await submit(stub, folder, request_id=f"copy-queued-{n}")).job_id
        for n, folder in enumerate(small_folders[1:4])
    ]
    before = await answers(stub, finished, queued)
    # Something to compare: file errors, events to replay, a library of several pages.
    assert before["file_errors"][finished[0]][0][0], "the corpus scan stored no file errors"
    assert all(events for replays in before["replays"].values() for events in replays)
    assert len(before["videos"]) == len(corpus.valid) + 3 and len(before["video_pages"]) > 2
    assert all(v.fingerprint for v in before["videos"])
    assert sum(v.health == scan_pb2.HEALTH_OK for v in before["videos"]) == 3
    await sqlite_server.stop()  # the blocker is saved QUEUED, attempt 2

    run = await copy_db(db, pg_url)
    assert run.code == 0, run.stderr
    counts = dict(re.findall(r"^  ([a-z ]+?) +([\d,]+)$", run.stdout, re.MULTILINE))
    assert counts["jobs"] == "6" and counts["videos"] == str(len(before["videos"])), run.stdout
    assert "4 queued job(s) will run" in run.stdout, run.stdout
    print(run.stdout)

    pg_server = await make_server(db=pg_url, **options)
    pg = await connect(pg_server.address)
    await wait_for_running(pg, blocker)  # the oldest queued job is claimed first, and hangs
    assert await answers(pg, finished, queued) == before
    assert (await get_job(pg, blocker)).attempt == 2

    # A retried submit finds the job its request id made, finished or queued.
    retried = await submit(pg, corpus.root, request_id="copy-corpus")
    assert (retried.job_id, retried.job.state) == (finished[0], SUCCEEDED)
    retried = await submit(pg, small_folders[1], request_id="copy-queued-0")
    assert retried.job_id == queued[0] and not retried.deduplicated
    # The queue runs once the worker is free, first queued first.
    await cancel(pg, blocker)
    ran = [await final_job(pg, job_id) for job_id in queued]
    assert [job.state for job in ran] == [SUCCEEDED] * 3
    starts = [job.start_time.ToNanoseconds() for job in ran]
    assert starts == sorted(starts)
    # The library kept its rows: a rescan finds the files unchanged.
    rescan = await scan(pg, small_folders[0])
    assert (rescan.result.unchanged, rescan.result.added) == (3, 0)


@pytest.mark.slow
async def test_a_job_left_running_is_copied_queued_with_its_next_attempt(
    spawn_server: Any,
    make_server: Any,
    connect: Any,
    medium_folder: Path,
    pg_url: str,
    tmp_path: Path,
) -> None:
    db = tmp_path / "crashed.db"
    crashed = await spawn_server("--workers", "1", db=db)
    stub = await connect(crashed.address)
    job_id = (await submit(stub, medium_folder)).job_id
    await wait_for_running(stub, job_id)
    crashed.kill()  # the job stays RUNNING in the file (and its last commits in the WAL)
    await crashed.wait(30)

    run = await copy_db(db, pg_url)
    assert run.code == 0, run.stderr
    assert "1 of them left RUNNING" in run.stdout, run.stdout
    [(state, attempt, last)] = await pg_rows(
        pg_url, "SELECT state, attempt, last_sequence FROM jobs"
    )
    assert (state, attempt) == (QUEUED, 2)
    [(blob,)] = await pg_rows(pg_url, f"SELECT event FROM job_events WHERE sequence = {last}")
    change = scan_pb2.JobEvent.FromString(blob).state_change
    assert (change.from_state, change.to_state, change.job.attempt) == (RUNNING, QUEUED, 2)

    server = await make_server(db=pg_url)
    pg = await connect(server.address)
    events = await watch_events(pg, job_id, after_sequence=last - 1, timeout=90)
    assert events[0].sequence == last and events[0].state_change.to_state == QUEUED
    sequences = [event.sequence for event in events]
    assert sequences == list(range(last, last + len(events)))  # gapless
    job = await final_job(pg, job_id)
    assert (job.state, job.attempt, job.result.files_total) == (SUCCEEDED, 2, 600)


async def test_libraries_and_their_feeds_are_copied_and_go_on(pg_url: str, tmp_path: Path) -> None:
    """The libraries keep their uids, counts and sequences, and their feeds their kept
    history: a follower resumes on PostgreSQL where it was on SQLite, and the next change
    takes the next sequence."""
    db = tmp_path / "libraries.db"
    sqlite = SqliteStore(db)
    await sqlite.open()
    try:
        sqlite.history = 3
        await sqlite.upsert_videos([video_row("/lib/kept.mp4", size=1)])
        await sqlite.create_library("lib", scan_pb2.Library(root="/lib"))
        await sqlite.create_library("empty", scan_pb2.Library(root="/empty"))
        for n in range(5):
            await sqlite.upsert_videos([video_row(f"/lib/{n}.mp4", size=n + 2)])
        before = {name: await sqlite.get_library(name) for name in ("lib", "empty")}
        feed = await sqlite.changes_after("lib", 0, 100)
    finally:
        await sqlite.close()
    run = await copy_db(db, pg_url)
    assert run.code == 0, run.stderr
    assert re.search(r"libraries +2\n", run.stdout) and re.search(r"changes +3\n", run.stdout)
    pg = PostgresStore(pg_url)
    await pg.open()
    try:
        assert {name: await pg.get_library(name) for name in ("lib", "empty")} == before
        assert await pg.changes_after("lib", 0, 100) == feed
        assert feed is not None and (feed.first_kept, feed.last_sequence) == (3, 5)
        await pg.upsert_videos([video_row("/lib/new.mp4", size=9)])
        page = await pg.changes_after("lib", 5, 100)
        assert page is not None and [c.sequence for c in page.changes] == [6]
        found = await pg.get_library("lib")
        assert found is not None and found.status.video_count == 7
    finally:
        await pg.close()


async def test_refuses_a_database_a_server_holds(
    make_server: Any, pg_url: str, tmp_path: Path
) -> None:
    db = tmp_path / "in-use.db"
    await make_server(db=db)
    run = await copy_db(db, pg_url)
    assert run.code == 2
    assert (
        f"cannot copy {db}: the database is in use by another mediascan-server (pid " in run.stderr
    )
    assert f"(pid {os.getpid()} on" in run.stderr
    assert "nothing was written" in run.stderr
    assert await pg_tables(pg_url) == []  # not even the schema


async def test_refuses_a_sqlite_schema_newer_than_the_code(pg_url: str, tmp_path: Path) -> None:
    db = tmp_path / "newer.db"
    await store_videos(db, library_rows(3))
    newer = str(SCHEMA_VERSION + 1)
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE meta SET value = ? WHERE key = 'schema_version'", (newer,))
    run = await copy_db(db, pg_url)
    assert run.code == 2
    assert f"schema version {newer}, newer than this server's {SCHEMA_VERSION}" in run.stderr
    assert await pg_tables(pg_url) == []
    with contextlib.closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT value FROM meta").fetchone() == (newer,)


async def test_refuses_a_target_schema_newer_than_the_code(pg_url: str, tmp_path: Path) -> None:
    async with await psycopg.AsyncConnection.connect(pg_url, autocommit=True) as conn:
        await conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
        await conn.execute("INSERT INTO schema_version VALUES (99)")
    db = tmp_path / "library.db"
    await store_videos(db, library_rows(3))
    run = await copy_db(db, pg_url)
    assert run.code == 2
    assert "has schema version 99, newer than this server's" in run.stderr
    assert await pg_tables(pg_url) == ["schema_version"]


async def test_refuses_a_target_that_is_not_empty(pg_url: str, tmp_path: Path) -> None:
    db = tmp_path / "library.db"
    await store_videos(db, library_rows(10))
    assert (await copy_db(db, pg_url)).code == 0
    again = await copy_db(db, pg_url)
    assert again.code == 2
    assert "is not empty (it has rows in videos): copy into a new, empty database" in again.stderr
    assert await pg_rows(pg_url, "SELECT count(*) FROM videos") == [(10,)]


async def test_refuses_what_is_not_a_mediascan_database(pg_url: str, tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    run = await copy_db(missing, pg_url)
    assert (run.code, "no such database file" in run.stderr) == (2, True), run.stderr
    assert not missing.exists()
    other = tmp_path / "other.db"
    with contextlib.closing(sqlite3.connect(other)) as conn:
        conn.execute("CREATE TABLE t (x)")
    run = await copy_db(other, pg_url)
    assert (run.code, "is not a mediascan database" in run.stderr) == (2, True), run.stderr
    assert await pg_tables(pg_url) == []


async def test_a_copy_that_fails_on_the_way_writes_nothing(pg_url: str, tmp_path: Path) -> None:
    db = tmp_path / "bad-row.db"
    await store_videos(db, library_rows(100))
    with contextlib.closing(sqlite3.connect(db)) as conn, conn:
        conn.execute("UPDATE videos SET path = 'a' || char(0) || 'b' WHERE id = 100")
    run = await copy_db(db, pg_url)
    assert run.code == 1
    assert "the copy failed and was rolled back, nothing was written" in run.stderr
    assert await pg_tables(pg_url) == []  # the schema went with the rows


async def test_no_server_starts_on_the_file_while_it_is_copied(pg_url: str, tmp_path: Path) -> None:
    db = tmp_path / "held.db"
    await store_videos(db, library_rows(10))
    seen: list[str] = []

    def report(table: str, rows: int) -> None:
        with pytest.raises(DatabaseLocked):
            DatabaseLock(db).acquire()
        seen.append(table)

    counts = await copy_database(db, pg_url, requeue=requeue_change, report=report)
    assert seen == [
        "jobs",
        "job_events",
        "file_errors",
        "requests",
        "videos",
        "libraries",
        "library_changes",
    ]
    assert (counts.videos, counts.jobs) == (10, 0)
    lock = DatabaseLock(db)
    lock.acquire()  # free again
    lock.release()


@pytest.mark.slow
@pytest.mark.xdist_group("heavy")
@pytest.mark.timeout(600)
async def test_a_big_library_copies_in_bounded_memory(pg_url: str, tmp_path: Path) -> None:
    db = tmp_path / "big.db"
    await store_videos(db, library_rows(BIG_LIBRARY))
    run = await copy_db(db, pg_url)
    assert run.code == 0, run.stderr
    # The copy reads its peak memory (VmHWM) from /proc/self/status once it has committed.
    # Not wait4's ru_maxrss: it counts the test process's memory too, which the child had
    # until it exec'd (a fork of this process, holding the rows just stored).
    summary = run.summary()
    peak = int(summary["peak"]) * 2**20
    print(
        f"{BIG_LIBRARY:,} videos copied in {summary['seconds']} s ({summary['rate']} rows/s), "
        f"peak memory {summary['peak']} MiB"
    )
    assert 0 < peak < PEAK_BOUND
    assert await pg_rows(pg_url, "SELECT count(*), max(id) FROM videos") == [
        (BIG_LIBRARY, BIG_LIBRARY)
    ]
    # A video added later gets the next id.
    async with await psycopg.AsyncConnection.connect(pg_url) as conn:
        cursor = await conn.execute(
            "INSERT INTO videos (path, size_bytes, mtime_ns, container, duration_ns, bit_rate,"
            " video_codec, width, height, frame_rate, audio_codec, audio_channels,"
            " audio_sample_rate, audio_streams, probe_ns, job_id, dev)"
            " VALUES ('/new.mkv', 1, 1, 'mkv', 1, 1, 'h264', 1, 1, 1, '', 0, 0, 0, 1, 'j', 0)"
            " RETURNING id"
        )
        assert await cursor.fetchone() == (BIG_LIBRARY + 1,)
        await conn.rollback()
