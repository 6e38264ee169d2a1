"""The duration an MP4 or QuickTime file's movie header (`mvhd`) states, read from the box
headers with a few small reads.

FFmpeg 8 (bundled with PyAV) reports a movie's duration as its longest track's sample durations,
which for variable frame rate video can end before the last frame is shown (a phone's 2.924 s
clip read as 2.789 s, while its last frame starts at 2.890 s); the movie header and the edit list
state the presentation length, which is what ffprobe 5.1 and players report."""

from __future__ import annotations

import os
import struct

#: Top-level boxes looked at, at most (ftyp, free, mdat, moov, ... : a handful in practice).
_MAX_BOXES = 64
#: Children of `moov` looked at before `mvhd`, at most (it is the first one in practice).
_MAX_CHILDREN = 16


def movie_duration_ns(fd: int, size: int) -> int:
    """The `mvhd` duration in nanoseconds; 0 when there is none (a fragmented file, no `moov`
    box among the first ones, an unreadable header)."""
    moov = _find_box(fd, 0, size, b"moov", _MAX_BOXES)
    if moov is None:
        return 0
    start, end = moov
    mvhd = _find_box(fd, start, end, b"mvhd", _MAX_CHILDREN)
    if mvhd is None:
        return 0
    body = os.pread(fd, 32, mvhd[0])
    if len(body) < 20:
        return 0
    if body[0] == 1:  # version 1: 64-bit times
        if len(body) < 32:
            return 0
        timescale, duration = struct.unpack(">IQ", body[20:32])
    else:
        timescale, duration = struct.unpack(">II", body[12:20])
    if timescale == 0 or duration in (0, 0xFFFFFFFF, 0xFFFFFFFFFFFFFFFF):
        return 0
    return int(duration) * 1_000_000_000 // int(timescale)


def _find_box(fd: int, start: int, end: int, kind: bytes, limit: int) -> tuple[int, int] | None:
    """(body start, box end) of the first box `kind` in [start, end), looking at `limit` boxes."""
    position = start
    for _ in range(limit):
        if position + 8 > end:
            return None
        header = os.pread(fd, 16, position)
        if len(header) < 8:
            return None
        length, name = struct.unpack(">I4s", header[:8])
        body = position + 8
        if length == 1:  # a 64-bit size follows
            if len(header) < 16:
                return None
            (length,) = struct.unpack(">Q", header[8:16])
            body += 8
        elif length == 0:  # to the end of the file
            length = end - position
        if length < body - position:
            return None
        if name == kind:
            return body, min(end, position + length)
        position += length
    return None
