"""The lock that makes a SQLite database one server's: `<db>.lock` beside the database file,
locked with `flock` (exclusive, non-blocking) before the database is opened or migrated and held
for the server's life. It records its holder (pid, host, listen address, start time), so that a
second server on the same database can say which server it found there."""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
from pathlib import Path


class DatabaseLocked(Exception):
    """Another server holds the database's lock: this one must not start."""


def lock_path(db: Path) -> Path:
    """`<db>.lock`, beside the database's real file (a symbolic link to the database leads
    to the same lock)."""
    real = Path(os.path.realpath(db))
    return real.with_name(real.name + ".lock")


class DatabaseLock:
    """An exclusive lock on `<db>.lock`, taken by `acquire()` and kept until `release()` (or
    the process's end: the kernel drops an flock with its last descriptor, so a killed server
    leaves no stale lock)."""

    def __init__(self, db: Path) -> None:
        self.path = lock_path(db)
        self._fd: int | None = None
        self._holder: dict[str, object] = {}

    def acquire(self, listen: str = "") -> None:
        """Take the lock or raise DatabaseLocked naming the server that holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise DatabaseLocked(self._refusal(holder)) from None
            except BaseException:
                os.close(fd)
                raise
            if _same_file(fd, self.path):
                break
            os.close(fd)  # the file was removed or replaced between open and flock: again
        self._fd = fd
        self._holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "listen": listen,
            "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
        self._write()

    def update(self, *, listen: str) -> None:
        """Record the address the server listens on once it is known (port 0 picks one)."""
        if self._fd is not None:
            self._holder["listen"] = listen
            self._write()

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)  # no holder any more; the file itself stays (see docs)
        os.close(fd)  # drops the lock

    def _write(self) -> None:
        assert self._fd is not None
        data = (json.dumps(self._holder) + "\n").encode()
        with contextlib.suppress(OSError):  # the lock holds even if its note cannot be written
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, data, 0)

    def _refusal(self, holder: dict[str, object]) -> str:
        if holder:
            who = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
            if holder.get("listen"):
                who += f", listening on {holder['listen']}"
            if holder.get("started"):
                who += f", started {holder['started']}"
        else:
            who = "a process that has not written its details yet"
        return (
            f"the database is in use by another mediascan-server ({who}): it holds the lock "
            f"{self.path}; stop that server first, or give this one another --db"
        )


def _read_holder(fd: int) -> dict[str, object]:
    with contextlib.suppress(OSError, ValueError):
        data = json.loads(os.pread(fd, 4096, 0) or b"{}")
        if isinstance(data, dict):
            return data
    return {}


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except OSError:
        return False
    opened = os.fstat(fd)
    return (on_disk.st_dev, on_disk.st_ino) == (opened.st_dev, opened.st_ino)
