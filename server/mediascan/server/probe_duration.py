"""How long a video plays, where that comes from, whether the file holds all the header claims,
and whether its frame rate varies (`measure`). Runs in the prober processes on an open container.

- MP4 and QuickTime: the movie header states the duration (`mp4_header.py`); the sample index
  (read with the header, no extra I/O) says whether every sample is inside the file: a copy cut
  short (with its index at the front) plays up to its first missing sample.
- Matroska and WebM: the header states a duration, or none (a live recording); one bounded read
  of the file's last bytes (`tail_view.py`, at most `MAX_TAIL` bytes) gives the last packets'
  timestamps, which measure a recording without a duration and a copy cut short.
- MPEG transport and program streams: FFmpeg measures them from the last packets itself.
- Streams without timestamps (raw elementary streams such as `.m2v` or `.h264`) and AVI files
  without an index: estimated from the file size and the bytes per frame of the first frames.
"""

from __future__ import annotations

import dataclasses
import itertools
import statistics
from fractions import Fraction
from typing import Any

import av

from mediascan.v1 import scan_pb2

from . import probe_streams
from .mp4_header import MovieHeader
from .tail_view import HeadAndTail, matroska_head

HEADER = scan_pb2.DURATION_SOURCE_HEADER
PACKETS = scan_pb2.DURATION_SOURCE_PACKETS
ESTIMATE = scan_pb2.DURATION_SOURCE_ESTIMATE

#: The MP4 and QuickTime demuxer.
MOV = "mov,mp4,m4a,3gp,3g2,mj2"
_MATROSKA = frozenset({"matroska,webm"})
#: Formats whose duration FFmpeg itself measures from the last packets' timestamps.
_MEASURED_BY_FFMPEG = frozenset({"mpegts", "mpeg"})
#: The frame count FFmpeg's AVI muxer leaves in the header when it cannot go back to fill it in.
_AVI_UNKNOWN_FRAMES = 1 << 30

#: The first read of a Matroska file's end, and the second when the first held no packet.
FIRST_TAIL = 256 * 1024
MAX_TAIL = 4 * 1024 * 1024
#: A Matroska header (up to the first cluster) larger than this is not read again for the end.
MAX_HEAD = 16 * 1024 * 1024
#: Bytes of a file without timestamps read from the start to count its frames per byte.
ESTIMATE_BYTES = 1024 * 1024
#: Packets of the end read, at most.
_MAX_TAIL_PACKETS = 4096
#: Entries of an MP4 sample index looked at for the frame rate, from each end.
_INDEX_SAMPLE = 32


@dataclasses.dataclass(frozen=True, kw_only=True)
class Head:
    """What the probe read of the main video stream's first packets."""

    first_pos: int  #: byte position of the first video packet (-1: not known)
    positions: list[int]  #: byte positions of the video packets read
    pts: list[int]  #: their timestamps, in the stream's time base (those that have one)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Timing:
    duration_ns: int  #: what plays (0: not known)
    source: int  #: scan_pb2.DurationSource
    header_ns: int  #: what the header states (0: nothing)
    truncated: bool
    variable_frame_rate: bool


def measure(
    container: Any, video: Any, fd: int, size: int, head: Head, movie: MovieHeader | None
) -> Timing:
    """The duration of the open `container` (file `fd` of `size` bytes; `movie`: its MP4 movie
    header, when it is one)."""
    name = container.format.name
    start_ns = int(container.start_time or 0) * 1000
    header_ns = _header_ns(container, video, movie)
    tail_pts: list[int] = []
    end_ns: int | None = None
    if name == MOV:
        end_ns = _mov_playable_ns(container, size, start_ns)
        tail_pts = _index_timestamps(video)
    elif name in _MATROSKA:
        end_ns, tail_pts = _matroska_end(fd, size, head, video.index, start_ns)
    vfr = _irregular(head.pts, tail_pts)
    if name in _MEASURED_BY_FFMPEG and header_ns > 0:
        return Timing(
            duration_ns=header_ns,
            source=PACKETS,
            header_ns=0,
            truncated=False,
            variable_frame_rate=vfr,
        )
    if end_ns is None and _untimed(container, video, head):
        end_ns = _estimate_ns(container, video, size, head)
        source = ESTIMATE
    else:
        source = PACKETS
    if header_ns > 0 and (end_ns is None or end_ns >= header_ns - _tolerance_ns(header_ns)):
        return Timing(
            duration_ns=header_ns,
            source=HEADER,
            header_ns=header_ns,
            truncated=False,
            variable_frame_rate=vfr,
        )
    return Timing(
        duration_ns=max(0, end_ns or 0),
        source=source,
        header_ns=header_ns,
        truncated=header_ns > 0,
        variable_frame_rate=vfr,
    )


def _header_ns(container: Any, video: Any, movie: MovieHeader | None) -> int:
    """The duration the container's header states (0: none)."""
    if movie is not None and movie.duration_ns > 0:
        return movie.duration_ns
    if container.format.name == "avi" and video.frames == _AVI_UNKNOWN_FRAMES:
        return 0
    if container.duration is not None and container.duration > 0:
        return int(container.duration) * 1000  # AV_TIME_BASE is microseconds
    if video.duration is not None and video.time_base is not None:
        return max(0, int(video.duration * video.time_base * 1_000_000_000))
    return 0


def _tolerance_ns(header_ns: int) -> int:
    """How much shorter than its header a file may end and still be whole: the last frames of
    a stream need not reach the header's end exactly (half a second, plus 0.5%)."""
    return 500_000_000 + header_ns // 200


def _mov_playable_ns(container: Any, size: int, start_ns: int) -> int | None:
    """Where an MP4's playable media ends when samples its index lists lie beyond the end of
    the file (None: every sample is there). No I/O: the index came with the header."""
    indexed = [
        (stream, entries, len(entries))
        for stream in container.streams
        if (entries := stream.index_entries) is not None and len(entries) and stream.time_base
    ]
    if all(
        entries[count - 1].pos + entries[count - 1].size <= size for _, entries, count in indexed
    ):
        return None
    ends: list[int] = []
    for stream, entries, count in indexed:
        low, high = 0, count  # the first entry that is not whole in the file (count: none)
        while low < high:
            middle = (low + high) // 2
            entry = entries[middle]
            if entry.pos + entry.size <= size:
                low = middle + 1
            else:
                high = middle
        end = entries[min(low, count - 1)].timestamp
        ends.append(_ns(end, stream.time_base) - start_ns)
    return max(ends) if ends else None


def _index_timestamps(video: Any) -> list[int]:
    """Timestamps of the video's sample index, from each end (no I/O)."""
    entries = video.index_entries
    count = len(entries) if entries is not None else 0
    picked = sorted(
        {*range(min(count, _INDEX_SAMPLE)), *range(max(0, count - _INDEX_SAMPLE), count)}
    )
    return [entries[i].timestamp for i in picked]


def _matroska_end(
    fd: int, size: int, head: Head, video_index: int, start_ns: int
) -> tuple[int | None, list[int]]:
    """(end of the last packets in ns, the video's timestamps there) from the file's last
    FIRST_TAIL bytes, or its last MAX_TAIL when those held no packet (a cluster larger than the
    first read). None when the header is larger than MAX_HEAD (attachments: read it again
    to reach the end would cost more than the duration is worth)."""
    if head.first_pos <= 0:
        return None, []
    start = matroska_head(fd, head.first_pos)
    if start > MAX_HEAD:
        return None, []
    found = None
    for tail in (FIRST_TAIL, MAX_TAIL):
        view = HeadAndTail(fd, head=start, tail_start=max(start, size - tail), size=size)
        found = _last_packets(view, video_index)
        if found is not None or size - tail <= start:
            break
    if found is None:
        return None, []
    end_ns, pts = found
    return end_ns - start_ns, pts


def _last_packets(view: HeadAndTail, video_index: int) -> tuple[int, list[int]] | None:
    """The end of the last packet of any stream in `view` (ns), and the video's timestamps
    among the last packets; None when the tail held no packet with a timestamp."""
    end_ns: int | None = None
    pts: list[int] = []
    try:
        with av.open(view, "r", format="matroska", metadata_errors="ignore") as tail:
            for count, packet in enumerate(tail.demux()):
                if count >= _MAX_TAIL_PACKETS:
                    break
                if packet.pts is None or packet.time_base is None:
                    continue
                end = _ns(packet.pts + (packet.duration or 0), packet.time_base)
                end_ns = end if end_ns is None else max(end_ns, end)
                if packet.stream.index == video_index:
                    pts.append(packet.pts)
    except (av.error.FFmpegError, OSError, ValueError):
        pass  # a tail that cannot be read says nothing
    return None if end_ns is None else (end_ns, pts)


def _untimed(container: Any, video: Any, head: Head) -> bool:
    """The stream has no timestamps to measure: a raw elementary stream, or an AVI file without
    an index (its timestamps count frames from wherever reading starts)."""
    if int(container.format.flags or 0) & probe_streams.NO_TIMESTAMPS:
        return True
    if container.format.name == "avi":
        entries = video.index_entries
        return entries is None or len(entries) <= len(head.positions)
    return False


def _estimate_ns(container: Any, video: Any, size: int, head: Head) -> int | None:
    """The file size over the bytes per video frame, at the stream's frame rate. The frames are
    counted from the start over ESTIMATE_BYTES of the file (read on from the first packets; the
    other streams' packets interleaved with them count in the bytes per frame), a better sample
    than the first frames alone (an encoder's first keyframe is large); a file that small is
    counted whole."""
    rate = probe_streams.frame_rate(video) or video.base_rate
    if not rate or not head.positions:
        return None
    first = head.positions[0]
    frames, last = len(head.positions), head.positions[-1]
    whole = False
    try:
        for packet in container.demux(video):
            if packet.size == 0 and packet.pos is None:
                continue
            if packet.pos is None or packet.pos < 0:
                continue
            if packet.pos - first > ESTIMATE_BYTES:
                break
            frames, last = frames + 1, packet.pos
        else:
            whole = True
    except (av.error.FFmpegError, OSError):
        pass
    if whole:
        return int(frames / float(rate) * 1_000_000_000)
    if frames < 2 or last <= first:
        return None
    per_frame = (last - first) / (frames - 1)
    return int((size - first) / per_frame / float(rate) * 1_000_000_000)


def _irregular(head: list[int], tail: list[int]) -> bool:
    """The frame timestamps are irregular (variable frame rate): within the first or last
    frames read, several steps differ from the usual one by more than a fifth (and by more than
    two ticks of the time base), or the usual step differs between the start and the end."""
    steps = [_steps(head), _steps(tail)]
    usual = [statistics.median(s) for s in steps if len(s) >= 3]
    for found in steps:
        if len(found) < 3:
            continue
        median = statistics.median(found)
        odd = sum(1 for step in found if _differs(step, median))
        if odd >= max(3, len(found) // 5):
            return True
    return len(usual) == 2 and _differs(usual[0], usual[1])


def _steps(pts: list[int]) -> list[int]:
    ordered = sorted(set(pts))
    return [b - a for a, b in itertools.pairwise(ordered) if b > a]


def _differs(step: float, usual: float) -> bool:
    return abs(step - usual) > max(2, usual / 5)


def _ns(value: int, time_base: Fraction) -> int:
    return int(value * time_base * 1_000_000_000)
