"""A file seen as its head followed by its tail (`HeadAndTail`): what a demuxer needs to read a
file's last packets without reading all of it.

A Matroska or WebM recording made live (a browser's MediaRecorder, a capture tool writing to a
pipe) states no duration and has no index to seek with, and a copy cut short keeps a header that
claims the full length. Their last timestamps are in the last clusters: FFmpeg's demuxer, given
the header (up to the first cluster) followed directly by the file's last bytes, resynchronises on
the next cluster it meets and reads the rest with their real timestamps. The view is a read-only
file object for `av.open`; reads go to the descriptor with `os.pread`, bounded by the view."""

from __future__ import annotations

import io
import os

#: Matroska's Cluster element id: a head ends before the first cluster.
MATROSKA_CLUSTER = b"\x1f\x43\xb6\x75"


class HeadAndTail(io.RawIOBase):
    """Bytes [0, head) of the file `fd` followed by bytes [tail_start, size): a file of
    `head + size - tail_start` bytes. `read_bytes` counts what was read."""

    def __init__(self, fd: int, *, head: int, tail_start: int, size: int) -> None:
        super().__init__()
        if not 0 <= head <= tail_start <= size:
            raise ValueError(f"bad view: head {head}, tail from {tail_start} of {size}")
        self._fd = fd
        self._head = head
        self._tail_start = tail_start
        self._length = head + size - tail_start
        self._position = 0
        self.read_bytes = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._position, os.SEEK_END: self._length}[whence]
        self._position = max(0, base + offset)
        return self._position

    def tell(self) -> int:
        return self._position

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        position = self._position
        if position >= self._length:
            return 0
        if position < self._head:
            where, count = position, min(len(buffer), self._head - position)
        else:
            where = self._tail_start + position - self._head
            count = min(len(buffer), self._length - position)
        data = os.pread(self._fd, count, where)
        buffer[: len(data)] = data
        self._position += len(data)
        self.read_bytes += len(data)
        return len(data)


def matroska_head(fd: int, first_packet_pos: int) -> int:
    """Where the header of a Matroska file ends: the start of the cluster that holds the first
    packet (read from the last 4 KiB before it), else the first packet itself."""
    start = max(0, first_packet_pos - 4096)
    before = os.pread(fd, first_packet_pos - start, start)
    found = before.rfind(MATROSKA_CLUSTER)
    return start + found if found >= 0 else first_packet_pos
