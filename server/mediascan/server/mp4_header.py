"""What an MP4 or QuickTime file's movie box (`moov`) states that PyAV does not tell, read from
the box headers with a few small reads (`movie_header`): the movie header's (`mvhd`) duration,
and each track's rotation from its track header's (`tkhd`) matrix.

FFmpeg 8 (bundled with PyAV) reports a movie's duration as its longest track's sample durations,
which for variable frame rate video can end before the last frame is shown (a phone's 2.924 s
clip read as 2.789 s, while its last frame starts at 2.890 s); the movie header and the edit list
state the presentation length, which is what ffprobe 5.1 and players report. The rotation FFmpeg
exports as the stream's display matrix (side data PyAV 18 does not expose) is this matrix: read
here, a probe of an MP4 needs no decoded frame for it."""

from __future__ import annotations

import dataclasses
import math
import os
import struct
from typing import Protocol

#: Top-level boxes looked at, at most (ftyp, free, mdat, moov, ... : a handful in practice).
_MAX_BOXES = 64
#: Children of `moov` looked at, at most (mvhd, a track per stream, udta, ...).
_MAX_CHILDREN = 64
#: Bytes of a box header read (its size, its name, its 64-bit size if any).
_HEADER_READ = 16
#: Bytes of a track header up to the end of its matrix (version 1: 52 + 36).
_TKHD_BYTES = 88
#: A `moov` this small is read whole, in one read.
_WHOLE_MOOV = 256 * 1024


@dataclasses.dataclass(frozen=True)
class MovieHeader:
    duration_ns: int  #: 0: none stated
    #: Rotation of each track, in the order of the tracks (FFmpeg's stream order), degrees
    #: counterclockwise as ffprobe reports them, in (-180, 180].
    rotations: tuple[int, ...]


def movie_header(fd: int, size: int) -> MovieHeader:
    """The movie header of the MP4 file `fd`; empty when there is none (a fragmented file, no
    `moov` among the first boxes, an unreadable or malformed header: what FFmpeg opened is
    still a video). A `moov` of up to _WHOLE_MOOV bytes (a clip's) is read at once; a larger
    one (a film's sample index) box header by box header."""
    try:
        return _movie_header(fd, size)
    except (OSError, struct.error, ValueError):
        return MovieHeader(0, ())


def _movie_header(fd: int, size: int) -> MovieHeader:
    moov = _find_box(_FileBytes(fd), 0, size, b"moov", _MAX_BOXES)
    if moov is None:
        return MovieHeader(0, ())
    start, end = moov
    data: _Bytes = _FileBytes(fd)
    if end - start <= _WHOLE_MOOV:
        data = _Memory(os.pread(fd, end - start, start), start)
    duration_ns = 0
    rotations: list[int] = []
    for name, body, box_end in _children(data, start, end, _MAX_CHILDREN):
        if name == b"mvhd":
            duration_ns = _mvhd_duration_ns(data.read(body, 32))
        elif name == b"trak":
            tkhd = _find_box(data, body, box_end, b"tkhd", _MAX_CHILDREN)
            rotations.append(_tkhd_rotation(data.read(tkhd[0], _TKHD_BYTES)) if tkhd else 0)
    return MovieHeader(duration_ns, tuple(rotations))


class _Bytes(Protocol):
    def read(self, position: int, count: int) -> bytes: ...


class _FileBytes:
    """Reads of the file itself."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def read(self, position: int, count: int) -> bytes:
        return os.pread(self._fd, count, position)


class _Memory:
    """Reads of bytes read from the file at `offset`."""

    def __init__(self, data: bytes, offset: int) -> None:
        self._data = data
        self._offset = offset

    def read(self, position: int, count: int) -> bytes:
        at = position - self._offset
        return self._data[at : at + count] if at >= 0 else b""


def _mvhd_duration_ns(body: bytes) -> int:
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


def _tkhd_rotation(body: bytes) -> int:
    """The rotation of a track header's matrix, as FFmpeg's `av_display_rotation_get` reads it
    (a 16.16 a, b and c, d of the matrix's first two rows)."""
    offset = 40 if body[:1] == b"\x00" else 52  # the matrix follows the times (64-bit in v1)
    if len(body) < offset + 36:
        return 0
    a, b, _, c, d = struct.unpack(">5i", body[offset : offset + 20])
    scale_x, scale_y = math.hypot(a, c), math.hypot(b, d)
    if scale_x == 0 or scale_y == 0:
        return 0
    degrees = round(-math.degrees(math.atan2(b / scale_y, a / scale_x))) % 360
    return degrees - 360 if degrees > 180 else degrees


def _children(data: _Bytes, start: int, end: int, limit: int) -> list[tuple[bytes, int, int]]:
    """(name, body start, end) of the boxes in [start, end), at most `limit`."""
    found: list[tuple[bytes, int, int]] = []
    position = start
    while len(found) < limit and position + 8 <= end:
        box = _box_at(data, position, end)
        if box is None:
            break
        name, body, box_end = box
        found.append((name, body, box_end))
        position = box_end
    return found


def _find_box(
    data: _Bytes, start: int, end: int, kind: bytes, limit: int
) -> tuple[int, int] | None:
    """(body start, box end) of the first box `kind` in [start, end), looking at `limit` boxes."""
    for name, body, box_end in _children(data, start, end, limit):
        if name == kind:
            return body, box_end
    return None


def _box_at(data: _Bytes, position: int, end: int) -> tuple[bytes, int, int] | None:
    header = data.read(position, _HEADER_READ)
    if len(header) < 8:
        return None
    length, name = struct.unpack(">I4s", header[:8])
    body = position + 8
    if length == 1:  # a 64-bit size follows
        if len(header) < 16:
            return None
        (length,) = struct.unpack(">Q", header[8:16])
        body += 8
    elif length == 0:  # to the end of the enclosing box
        length = end - position
    if length < body - position:
        return None
    return name, body, min(end, position + length)
