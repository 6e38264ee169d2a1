"""The open-descriptor bookkeeping of a scan: the scanned folder's descriptor (`RootFolder`) and
the files the walker opened for probing that nobody closed yet (`OpenFiles`, bounded). Whatever
way a scan ends, every descriptor it opened is closed once."""

from __future__ import annotations

import os
import threading

#: A walker that found every descriptor of its scan in use waits until this many are free.
REOPEN_AT = 16


class RootFolder:
    """The scanned folder's descriptor: taken by the walker thread (which closes it), or closed
    by the scan if the walker never started."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd
        self._lock = threading.Lock()

    def take(self) -> int | None:
        with self._lock:
            fd, self._fd = self._fd, None
            return fd

    def abandon(self) -> None:
        fd = self.take()
        if fd is not None:
            os.close(fd)


class OpenFiles:
    """The files of one scan the walker opened and nobody closed yet: at most `limit` at once.
    The walker thread reserves a place, opens the file and adds it; the loop closes each once
    its probe is answered; `close_all` closes the rest when the scan ends, however it ends."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._fds: set[int] = set()
        self._reserved = 0
        self._closed = False
        self._change = threading.Condition()

    def reserve(self, stop: threading.Event, *, wait: bool) -> bool:
        """Reserve the place of one more open file; without `wait`, False if none is free.
        With it, wait until `REOPEN_AT` are free (so that the walker hands files over in
        batches), or until the scan is over (False)."""
        with self._change:
            while not (self._closed or stop.is_set()):
                used = len(self._fds) + self._reserved
                if used + (min(REOPEN_AT, self._limit) if wait else 1) <= self._limit:
                    self._reserved += 1
                    return True
                if not wait:
                    return False
                self._change.wait(0.2)
            return False

    def add(self, fd: int) -> bool:
        """Turn a reservation into the open file `fd`; False (and `fd` closed) when the scan is
        over."""
        with self._change:
            self._reserved -= 1
            if not self._closed:
                self._fds.add(fd)
                return True
        os.close(fd)
        return False

    def release(self) -> None:
        """Give a reservation back (the open failed)."""
        with self._change:
            self._reserved -= 1
            self._change.notify()

    def close(self, fd: int) -> None:
        with self._change:
            if fd in self._fds:
                self._fds.discard(fd)
                os.close(fd)
                self._change.notify()

    def close_all(self) -> None:
        with self._change:
            self._closed = True
            for fd in self._fds:
                os.close(fd)
            self._fds.clear()
            self._change.notify_all()
