"""A SQLite store starts its reader threads, each with its connection, when it opens: a server
holds the same threads and descriptors from its start, however its reads overlap later (the
descriptors are what `test_cancellation` counts for leaks)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
from pathlib import Path

import pytest

from mediascan.server.store import SqliteStore, StorageError
from mediascan.server.store.sqlite import readers as readers_module
from mediascan.server.store.sqlite import schema


def database_fds(path: Path) -> list[str]:
    """The descriptors this process holds on the database's files (the file, -wal, -shm)."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:  # the listing's own descriptor, closed since
            continue
        if target.startswith(str(path)) and not target.endswith(".lock"):
            found.append(target)
    return sorted(found)


def readers() -> list[str]:
    return sorted(t.name for t in threading.enumerate() if t.name.startswith("sqlite-reader"))


async def test_the_reader_threads_and_their_files_are_open_from_the_start(
    tmp_path: Path,
) -> None:
    path = tmp_path / "library.db"
    store = SqliteStore(path)
    await store.open()
    try:
        assert readers() == ["sqlite-reader_0", "sqlite-reader_1"]
        at_start = database_fds(path)
        # The writer's file, -wal and -shm, and each reader's file and -wal.
        assert at_start.count(str(path)) == 3 and at_start.count(f"{path}-wal") == 3, at_start
        await asyncio.gather(*(store.video_rows([f"/v/{n}.mp4"]) for n in range(200)))
        assert database_fds(path) == at_start
        assert readers() == ["sqlite-reader_0", "sqlite-reader_1"]
    finally:
        await store.close()
    assert readers() == []
    assert database_fds(path) == []


async def test_a_reader_that_cannot_open_fails_the_open_and_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The second reader's connection fails (as when the process is out of descriptors): the
    # open fails with StorageError, and no thread, descriptor or lock of it is left: the
    # same file opens at once afterwards.
    path = tmp_path / "library.db"
    opened: list[Path] = []

    def connect_once(where: Path) -> sqlite3.Connection:
        if opened:
            raise sqlite3.OperationalError("unable to open database file")
        opened.append(where)
        return schema.connect(where)

    monkeypatch.setattr(readers_module, "connect", connect_once)
    store = SqliteStore(path)
    with pytest.raises(StorageError, match="unable to open database file"):
        await store.open()
    assert [t.name for t in threading.enumerate() if t.name.startswith("sqlite-")] == []
    assert database_fds(path) == []
    monkeypatch.undo()
    again = SqliteStore(path)
    await again.open()  # not DatabaseLocked: the failed open released the lock
    await again.close()
