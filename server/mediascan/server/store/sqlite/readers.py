"""The reader threads: a small pool, each thread with its own connection (WAL lets them read
while the writer writes)."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

from ..protocol import StorageError
from .schema import connect

T = TypeVar("T")


class Readers:
    """`sqlite-reader` threads running read operations."""

    def __init__(self, path: Path, threads: int) -> None:
        self._path = path
        self._threads = threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="sqlite-reader")
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []  #: each thread's, closed by close()
        self._lock = threading.Lock()

    def start(self, timeout: float = 30.0) -> None:
        """Start every thread and open its connection now (blocking: call it off the loop), so
        that a server holds the same threads and descriptors from its start, whatever its load
        (a pool starts a thread only when every other one is busy); StorageError if a
        connection cannot be opened."""
        gate = threading.Barrier(self._threads, timeout=timeout)

        def open_one() -> None:
            try:
                self._run(_first_read)
            except BaseException:
                gate.abort()  # the others stop waiting for this one
                raise
            gate.wait()  # holds this thread until all have a call: none is reused

        futures = [self._pool.submit(open_one) for _ in range(self._threads)]
        errors = [error for future in futures if (error := future.exception()) is not None]
        failed = [error for error in errors if not isinstance(error, threading.BrokenBarrierError)]
        if failed:
            raise failed[0]
        if errors:
            raise StorageError(
                f"the database's reader threads did not all start within {timeout:g} s"
            ) from errors[0]

    def submit(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Run `op` on a reader thread's connection; sqlite3 errors become StorageError."""
        return asyncio.get_running_loop().run_in_executor(self._pool, self._run, op)

    def close(self) -> None:
        """Wait for the reads in flight, then close the connections (blocking: call it off the
        loop)."""
        self._pool.shutdown(True)
        with self._lock:
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    def _run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        try:
            if conn is None:
                conn = connect(self._path)
                self._local.conn = conn
                with self._lock:
                    self._connections.append(conn)
            return op(conn)
        except sqlite3.Error as exc:
            raise StorageError(f"database read failed: {exc}") from exc


def _first_read(conn: sqlite3.Connection) -> None:
    """A read that opens what every later read uses (the WAL file too)."""
    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
