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
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="sqlite-reader")
        self._local = threading.local()

    def submit(self, op: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        """Run `op` on a reader thread's connection; sqlite3 errors become StorageError."""
        return asyncio.get_running_loop().run_in_executor(self._pool, self._run, op)

    def close(self) -> None:
        """Wait for the reads in flight (blocking: call it off the loop)."""
        self._pool.shutdown(True)

    def _run(self, op: Callable[[sqlite3.Connection], T]) -> T:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        try:
            if conn is None:
                conn = connect(self._path)
                self._local.conn = conn
            return op(conn)
        except sqlite3.Error as exc:
            raise StorageError(f"database read failed: {exc}") from exc
