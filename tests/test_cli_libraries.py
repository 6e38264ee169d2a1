"""`mediascan library add|list|show|update|remove|watch`, `videos --library` and `scan --force`:
the real console script against a real server, judged by its exit status and output."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import signal
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from _library_helpers import real, tiny_video
from test_cli import MEDIASCAN, TIMEOUT, Result, _env, assert_no_traceback, run

from mediascan.client import ScanClient
from mediascan.v1 import scan_pb2


def details(text: str) -> dict[str, str]:
    """The `key  value` lines of `library show` as a dict."""
    rows = {}
    for line in text.splitlines():
        key, _, value = line.partition("  ")
        rows[key] = value.strip()
    return rows


async def scan(client: ScanClient, root: Path) -> None:
    submitted = await client.submit_scan(str(root), force=True)
    job = await client.wait(submitted.job_id, timeout=TIMEOUT)
    assert job.state == scan_pb2.JOB_STATE_SUCCEEDED, job


#: `library add films films ...` with every setting given.
ADD_FILMS = (
    "library",
    "add",
    "films",
    "films",
    "--watch-mode",
    "poll",
    "--poll-interval",
    "2m",
    "--quiet-window",
    "3s",
    "--rescan-interval",
    "7d",
    "--full-every",
    "4",
    "--removal-limit",
    "25%",
    "--extensions",
    "mkv,.WEBM",
    "--no-recursive",
)


async def add_films(server: Any, tmp_path: Path) -> Result:
    """The library `films` of tmp_path/films, made with ADD_FILMS (a relative root)."""
    (tmp_path / "films").mkdir()
    added = await run(*ADD_FILMS, "--server", server.address, cwd=tmp_path)
    assert added.code == 0, added
    return added


async def test_add_prints_the_library(server: Any, tmp_path: Path) -> None:
    shown = details((await add_films(server, tmp_path)).stdout)
    assert shown["library"] == "libraries/films" and shown["root"] == real(tmp_path / "films")
    assert shown["state"].startswith("ACTIVE since ")
    assert shown["watching"] == "poll every 2m" and shown["quiet window"] == "3.0s"
    assert shown["rescans"] == "every 168h, each 4th full"
    assert shown["removal limit"] == "25% of its videos a scan"
    assert shown["scan options"] == "not recursive, no symlinks"
    assert shown["extensions"] == "mkv,.WEBM"
    assert shown["videos"] == "0 (0 B)" and shown["last change"] == "0"
    assert shown["uid"] and shown["created"]
    (tmp_path / "shows").mkdir()
    made = await run(
        "library", "add", "shows", str(tmp_path / "shows"), "--json", "--server", server.address
    )
    assert made.code == 0, made
    assert made.json()["name"] == "libraries/shows"
    assert made.json()["watchMode"] == "WATCH_MODE_AUTO"  # the server's default
    assert "extensions" not in made.json()  # the server's set


async def test_list_is_a_table_of_the_libraries(server: Any, tmp_path: Path) -> None:
    await add_films(server, tmp_path)
    (tmp_path / "shows").mkdir()
    address = ("--server", server.address)
    assert (await run("library", "add", "shows", str(tmp_path / "shows"), *address)).code == 0
    listed = await run("library", "list", *address)
    assert listed.code == 0, listed
    header, _, *rows = listed.stdout.splitlines()
    assert header.split() == [
        *("LIBRARY", "STATE", "WATCH", "VIDEOS", "SIZE", "LAST", "CHANGE", "ROOT")
    ]
    # (A library's watch beginning is a change of its status: the last change is 0 or 1.)
    assert re.fullmatch(rf"films +ACTIVE +poll +0 +0 B +[01] +{real(tmp_path / 'films')}", rows[0])
    # AUTO, and what it chose once the server's watch of the library has begun.
    shows = rf"shows +ACTIVE +auto( \(events\))? +0 +0 B +[01] +{real(tmp_path / 'shows')}"
    assert re.fullmatch(shows, rows[1]), rows
    limited = await run("--json", "library", "list", "--limit", "1", *address)
    assert [lib["name"] for lib in limited.json()["libraries"]] == ["libraries/films"]
    limited = await run("library", "list", "--limit", "1", *address)
    assert len(limited.stdout.splitlines()) == 3
    assert limited.stderr == "(the first 1 libraries; --limit 0 lists all)\n"


async def test_update_changes_only_the_settings_given(server: Any, tmp_path: Path) -> None:
    await add_films(server, tmp_path)
    address = ("--server", server.address)
    updated = await run(
        "library", "update", "films", "--quiet-window", "10s", "--recursive", *address
    )
    assert updated.code == 0, updated
    shown = details(updated.stdout)
    assert shown["quiet window"] == "10.0s" and shown["scan options"] == "recursive, no symlinks"
    assert shown["watching"] == "poll every 2m" and shown["rescans"] == "every 168h, each 4th full"
    assert shown["removal limit"] == "25% of its videos a scan"
    cleared = await run("library", "update", "libraries/films", "--rescan-interval", "0", *address)
    assert details(cleared.stdout)["rescans"] == "none"
    again = details((await run("library", "show", "films", *address)).stdout)
    assert (again["rescans"], again["quiet window"]) == ("none", "10.0s")


async def test_remove_says_what_becomes_of_the_videos(server: Any, tmp_path: Path) -> None:
    await add_films(server, tmp_path)
    (tmp_path / "shows").mkdir()
    address = ("--server", server.address)
    assert (await run("library", "add", "shows", str(tmp_path / "shows"), *address)).code == 0
    removed = await run("library", "remove", "films", *address)
    assert removed.code == 0, removed
    assert removed.stdout == "library films removed; its videos stay (scans keep them current)\n"
    dropped = await run("library", "remove", "shows", "--drop-videos", "--json", *address)
    assert (dropped.code, dropped.stdout) == (0, "{}\n")
    empty = await run("library", "list", *address)
    assert (empty.code, empty.stdout, empty.stderr) == (0, "", "no libraries\n")


async def test_refusals_and_bad_arguments_exit_2(server: Any, tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    address = ("--server", server.address)
    assert (await run("library", "add", "a", str(tmp_path / "a"), *address)).code == 0
    cases = [
        (("library", "show", "nope"), 'error: NOT_FOUND: library "nope" does not exist'),
        (("library", "add", "b", str(tmp_path / "a" / "b")), "error: FAILED_PRECONDITION: "),
        (("library", "add", "Bad", str(tmp_path)), "error: INVALID_ARGUMENT: library_id: "),
        (("library", "update", "a"), "error: give the settings to change"),
        (("library", "update", "a", "--poll-interval", "0.5s"), "library.poll_interval"),
        (("library", "update", "a", "--removal-limit", "150%"), "expected a share from 0 to 1"),
        (("library", "update", "a", "--watch-mode", "inotify"), "invalid choice: 'inotify'"),
        (("library", "remove", "nope"), "error: NOT_FOUND: "),
        (("library", "watch", "nope"), "error: NOT_FOUND: "),
        (("library",), "the following arguments are required: COMMAND"),
    ]
    for args, said in cases:
        result = await run(*args, *address)
        assert result.code == 2, (args, result)
        assert said in result.stderr, (args, result.stderr)
        assert_no_traceback(result)


class Watch:
    """`mediascan library watch ...` running, its lines read as they come."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    async def line(self) -> str:
        assert self.process.stdout is not None
        async with asyncio.timeout(TIMEOUT):
            line = await self.process.stdout.readline()
        assert line, "the watch ended"
        return line.decode().rstrip("\n")

    async def lines(self, count: int) -> list[str]:
        return [await self.line() for _ in range(count)]

    async def interrupt(self) -> tuple[int, str]:
        """Ctrl-C: its exit status and what it said on stderr."""
        self.process.send_signal(signal.SIGINT)
        assert self.process.stderr is not None
        async with asyncio.timeout(TIMEOUT):
            stderr = await self.process.stderr.read()
            code = await self.process.wait()
        return code, stderr.decode()


def _interruptible() -> None:
    """In the child, before the CLI starts: Ctrl-C (SIGINT) back to its default. A test run
    started as a shell's background job ignores SIGINT (POSIX shells do that to background
    commands), every process it starts inherits that, and Python then installs no
    KeyboardInterrupt handler: the CLI would never see the test's Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.asynccontextmanager
async def watching(*args: str) -> AsyncIterator[Watch]:
    process = await asyncio.create_subprocess_exec(
        str(MEDIASCAN),
        "library",
        "watch",
        *args,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=_env(),
        preexec_fn=_interruptible,
    )
    try:
        yield Watch(process)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_watch_prints_each_change_and_resumes_after_a_server_restart(
    make_server: Any, tmp_path: Path
) -> None:
    first = await make_server(shutdown_grace=0)
    root = tmp_path / "lib"
    tiny_video(root / "a.mp4")
    async with ScanClient(first.address) as client:
        await client.create_library(
            "lib", str(root), quiet_window=1e-9, watch_mode=scan_pb2.WATCH_MODE_OFF
        )
        async with watching("lib", "--server", first.address) as watch:
            assert (
                await watch.line()
                == "0      RESYNC   (the library as of change 0: the changes after it follow)"
            )
            await scan(client, root)
            assert await watch.line() == f"1      ADDED    {real(root / 'a.mp4')}"
            await first.stop()
            await make_server(listen=first.address, shutdown_grace=0)
            os.rename(root / "a.mp4", root / "b.mp4")
            tiny_video(root / "c.mp4", seconds=0.5)
            await scan(client, root)
            later = sorted(await watch.lines(2))
            assert later == [
                f"2      MOVED    {real(root / 'b.mp4')} (from {real(root / 'a.mp4')})",
                f"3      ADDED    {real(root / 'c.mp4')}",
            ] or later == [
                f"2      ADDED    {real(root / 'c.mp4')}",
                f"3      MOVED    {real(root / 'b.mp4')} (from {real(root / 'a.mp4')})",
            ]
            tiny_video(root / "c.mp4", seconds=0.9)
            os.unlink(root / "b.mp4")
            await scan(client, root)
            last = sorted(await watch.lines(2))
            assert last[0].startswith("4      ") and last[1].startswith("5      ")
            kinds = {line.split()[1]: line for line in last}
            assert kinds["REMOVED"].endswith(real(root / "b.mp4"))
            assert kinds["UPDATED"].startswith(
                f"{kinds['UPDATED'][:6]} UPDATED  {real(root / 'c.mp4')}: "
            )
            assert "size_bytes" in kinds["UPDATED"] and "duration" in kinds["UPDATED"]
            code, stderr = await watch.interrupt()
    assert code == 130
    assert (
        stderr == "interrupted after change 5 (go on with: mediascan library watch lib --after 5)\n"
    )


async def test_watch_json_lines_after_a_change(server: Any, tmp_path: Path) -> None:
    root = tmp_path / "lib"
    tiny_video(root / "a.mp4")
    async with ScanClient(server.address) as client:
        library = await client.create_library(
            "lib", str(root), quiet_window=1e-9, watch_mode=scan_pb2.WATCH_MODE_OFF
        )
        await scan(client, root)  # change 1
        tiny_video(root / "b.mp4", seconds=0.4)
        await scan(client, root)  # change 2
        async with watching(
            "libraries/lib", "--after", "1", "--json", "--server", server.address
        ) as watch:
            change = json.loads(await watch.line())
            assert (change["sequence"], change["kind"]) == ("2", "CHANGE_KIND_ADDED")
            assert change["libraryUid"] == library.uid
            assert change["video"]["path"] == change["path"] == real(root / "b.mp4")
            os.unlink(root / "a.mp4")
            await scan(client, root)
            change = json.loads(await watch.line())
            assert (change["sequence"], change["kind"], change["path"]) == (
                "3",
                "CHANGE_KIND_REMOVED",
                real(root / "a.mp4"),
            )
            code, _ = await watch.interrupt()
    assert code == 130


async def test_videos_of_a_library_and_a_forced_scan(server: Any, tmp_path: Path) -> None:
    root = tmp_path / "lib"
    videos = [tiny_video(root / f"v{i}.mp4", seconds=0.2 + i / 10) for i in range(3)]
    tiny_video(tmp_path / "other" / "x.mp4")
    address = ("--server", server.address)
    assert (
        await run(
            "library",
            "add",
            "lib",
            str(root),
            "--quiet-window",
            "1ms",
            "--watch-mode",
            "off",
            *address,
        )
    ).code == 0
    assert (await run("scan", str(tmp_path), "--watch", *address)).code == 0
    listed = await run("videos", "--library", "lib", "--json", *address)
    assert [v["path"] for v in listed.json()["videos"]] == [real(p) for p in videos]
    videos[0].unlink()
    # --force is in the request: the same request id without it is another request.
    forced = await run("scan", str(root), "--force", "--request-id", "f-1", "--watch", *address)
    assert forced.code == 0 and "1 removed" in forced.stdout, forced
    again = await run("scan", str(root), "--request-id", "f-1", *address)
    assert again.code == 2 and "INVALID_ARGUMENT: request_id" in again.stderr, again
    left = await run("videos", "--library", "lib", *address)
    assert [line.split()[0] for line in left.stdout.splitlines()[2:]] == [
        real(p) for p in videos[1:]
    ]
    none = await run("videos", "--library", "lib", "--codec", "vp9", *address)
    assert none.stderr == "no videos in library lib with codec vp9\n"
