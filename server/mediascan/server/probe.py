"""Probing one file with PyAV (FFmpeg's libraries in-process: no ffprobe start-up per file).

`probe_file` is blocking. The server runs it in prober processes (`probe_pool.py`), each started
as `python -m mediascan.server.probe` (`serve`). A prober never opens a file by its path: its
stdin is a Unix socket on which the server sends batches of files as open descriptors
(`SCM_RIGHTS`) with their paths (for messages), and it reads each descriptor through
`/proc/self/fd/N` (the file the server opened, with no path lookup), answering one JSON line per
file on stdout.

A probe stays cheap: it reads the container header and the stream parameters (what ffprobe
-show_format -show_streams reports), the main video's first packets (at most 16), decodes one
keyframe for the side data only frames carry where the header cannot tell (`probe_picture.py`;
an MP4's movie header says it all, unless it signals HDR: `mp4_header.py`), and reads a few MiB
near the end of the file when the header cannot be trusted with the duration
(`probe_duration.py`). Which streams are the video and the audio, and the streams, chapters and
tags, are `probe_streams.py`; what a probe returns is `probed.py`.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import errno
import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import Any, Protocol

import av

from mediascan.v1 import scan_pb2

from . import mp4_header, probe_duration, probe_picture, probe_streams
from .fingerprint import fingerprint
from .probed import PROBER_VERSION, ProbeResult, result_to_json
from .prober_ops import OPERATIONS

#: FFmpeg demuxers that open anything (text, images) and must not count as videos.
_NOT_VIDEO_FORMATS = frozenset({"tty", "image2", "image2pipe", "lavfi", "bin", "txt"})

av.logging.set_level(av.logging.PANIC)  # corrupt files are reported per file, not on stderr


class Prober(Protocol):
    """Probes one file (e.g. `ProbePool`): reads the open descriptor `fd` (kept open by the
    caller until the answer), never `path` (named in messages); raises ProbeError when it is not
    a usable video."""

    async def probe(self, fd: int, path: str) -> ProbeResult: ...


class ProbeError(Exception):
    """The file is not a readable video. `reason` is a short code: not_video, corrupt,
    unreadable, vanished, timeout (the probe was killed), crashed (the prober died on it),
    unavailable (no prober could take it), prober_killed (its prober was killed from outside,
    twice: not the file's fault)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


#: Files sent to a prober in one message at most (the pool's batch).
MAX_BATCH = 16
#: Largest message of paths a prober reads (16 paths of at most 4,096 bytes each, in JSON).
_MAX_MESSAGE = 1 << 20


def probe_descriptor(fd: int) -> ProbeResult:
    """Probe the open regular file `fd` (not by any path: through `/proc/self/fd`, the very file
    that was opened). Raises ProbeError when it is not a usable video."""
    if os.fstat(fd).st_nlink == 0:
        raise ProbeError("vanished", "the file vanished before it could be probed")
    return probe_file(f"/proc/self/fd/{fd}", fd=fd)


def probe_file(path: str, *, fd: int | None = None) -> ProbeResult:
    """Read a file's format and streams (the open descriptor `fd` of `path` serves the bounded
    reads near the end; without it the file is opened again). Raises ProbeError when it is not a
    usable video."""
    container = _open(path)
    with container, contextlib.ExitStack() as stack:
        if fd is None:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            stack.callback(os.close, fd)
        return _probe(container, fd)


def _open(path: str) -> av.container.InputContainer:
    try:
        return av.open(path, mode="r", metadata_errors="ignore")
    except FileNotFoundError as exc:
        raise ProbeError("vanished", "the file vanished before it could be probed") from exc
    except PermissionError as exc:
        raise ProbeError("unreadable", "cannot read the file: permission denied") from exc
    except av.error.FFmpegError as exc:
        raise ProbeError("corrupt", f"not a readable media file: {_ffmpeg_reason(exc)}") from exc
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ProbeError("unreadable", f"cannot read the file: {reason}") from exc


def _probe(container: av.container.InputContainer, fd: int) -> ProbeResult:
    format_name = container.format.name
    if format_name in _NOT_VIDEO_FORMATS:
        raise ProbeError("not_video", f"not a video: FFmpeg reads it as {format_name!r}")
    video = probe_streams.main_video(container)
    if video is None:
        raise ProbeError("not_video", "not a video: the file has no video stream")
    width = int(video.codec_context.width or 0)
    height = int(video.codec_context.height or 0)
    if width <= 0 or height <= 0:
        raise ProbeError("corrupt", "the video stream has no frame size")
    size = os.fstat(fd).st_size
    mp4 = format_name == probe_duration.MOV
    movie = mp4_header.movie_header(fd, size) if mp4 else None
    packets, head = _read_head(container, video, few=mp4 or format_name == "matroska,webm")
    timing = probe_duration.measure(container, video, fd, size, head, movie)
    if timing.duration_ns <= 0:
        raise ProbeError("corrupt", _NO_DURATION)
    details = scan_pb2.Video(video_stream_index=video.index)
    # An MP4's rotation is in its track header; a frame is decoded when it may hold more.
    frame = None
    if movie is None or probe_picture.needs_frame(video):
        frame = probe_picture.first_frame(video, packets)
    tracks = movie.rotations if movie is not None else ()
    rotation = tracks[video.index] if frame is None and video.index < len(tracks) else None
    rotation, hdr = probe_picture.describe(video, frame, details, rotation=rotation)
    probe_streams.describe(container, details)
    if timing.truncated:
        details.header_duration.FromNanoseconds(timing.header_ns)
    audio = probe_streams.main_audio(container)
    details.audio_stream_index = audio.index if audio is not None else -1
    rate = probe_streams.frame_rate(video)
    return ProbeResult(
        container=format_name,
        duration_ns=timing.duration_ns,
        bit_rate=int(container.bit_rate or 0),
        video_codec=probe_streams.codec_name(video),
        width=width,
        height=height,
        frame_rate=float(rate) if rate else 0.0,
        audio_codec=probe_streams.codec_name(audio) if audio is not None else "",
        audio_channels=probe_streams.channels(audio) if audio is not None else 0,
        audio_sample_rate=int(audio.codec_context.sample_rate or 0) if audio else 0,
        audio_streams=len(container.streams.audio),
        duration_source=timing.source,
        truncated=timing.truncated,
        variable_frame_rate=timing.variable_frame_rate,
        rotation=rotation,
        hdr=hdr,
        prober_version=PROBER_VERSION,
        details=details.SerializeToString(),
    )


#: The error of a video whose length cannot be told from its header, its packets or its size.
_NO_DURATION = "the video stream has no duration (truncated or broken)"
#: Video packets read from the start, at most, and at least when there are more.
_HEAD_PACKETS = (16, 8)


def _read_head(
    container: av.container.InputContainer, video: av.stream.Stream, *, few: bool
) -> tuple[list[av.Packet[Any]], probe_duration.Head]:
    """The main video's first packets: up to the first keyframe when `few` (an MP4 or
    Matroska file, whose frame timing comes from its index or its end), else at most 16 (8 once
    one is a keyframe). A header alone is not a video: a file cut short often keeps a valid
    header and loses the media."""
    packets: list[av.Packet[Any]] = []
    most, enough = _HEAD_PACKETS
    if few:
        enough = 1
    try:
        for packet in container.demux(video):
            if packet.size:
                packets.append(packet)
            if len(packets) >= most or (
                len(packets) >= enough and any(p.is_keyframe for p in packets)
            ):
                break
    except av.error.FFmpegError as exc:
        if not packets:
            raise ProbeError(
                "corrupt", f"the video data is unreadable: {_ffmpeg_reason(exc)}"
            ) from exc
    if not packets:
        raise ProbeError("corrupt", "the file holds no video data (truncated or broken)")
    positions = [int(p.pos) for p in packets if p.pos is not None and p.pos >= 0]
    head = probe_duration.Head(
        first_pos=positions[0] if positions else -1,
        positions=positions,
        pts=[int(p.pts) for p in packets if p.pts is not None],
    )
    return packets, head


def _ffmpeg_reason(exc: av.error.FFmpegError) -> str:
    message = getattr(exc, "strerror", None) or str(exc)
    if getattr(exc, "errno", None) == errno.ENOENT:
        return "file not found"
    return str(message)


def _die_with_parent() -> None:
    """Ask Linux to kill this prober when the server dies, even while a probe hangs (a hung
    probe never reads the closed stdin that would otherwise end it). The server names itself
    in PARENT_ENV: a server that died before the prctl took effect (while this process was
    still starting) is no longer the parent, and then the prober ends at once, before it reads
    a batch that was already waiting on its stdin."""
    parent = int(os.environ.get(PARENT_ENV) or os.getppid())
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        os._exit(1)


_PR_SET_PDEATHSIG = 1
#: The environment variable in which the server gives a prober its own pid.
PARENT_ENV = "MEDIASCAN_PROBER_PARENT"


def serve(before: Callable[[str, str], None] | None = None) -> None:
    """The prober process: batches of (paths, descriptors) in on the socket that is its stdin,
    one JSON answer per file out on stdout, in order. `before(path, op)` runs before each file
    (tests: `testing_prober.py` hangs or aborts there on marked files)."""
    if sys.platform == "linux":
        _die_with_parent()
    requests = socket.socket(fileno=0)
    out = sys.stdout
    while True:
        data, fds, _, _ = socket.recv_fds(requests, _MAX_MESSAGE, MAX_BATCH)
        if not data:
            return  # the server closed its end
        # Each item is a path (a probe) or [path, operation] (`prober_ops.py`).
        items: list[str | list[str]] = json.loads(data)
        for fd in fds[len(items) :]:
            os.close(fd)
        for index, item in enumerate(items):
            path, op = (item, "probe") if isinstance(item, str) else item
            fd = fds[index] if index < len(fds) else -1
            if before is not None:
                before(path, op)
            try:
                answer = _answer(fd, op)
            finally:
                if fd >= 0:
                    os.close(fd)
            out.write(json.dumps(answer) + "\n")
            out.flush()


def _answer(fd: int, op: str = "probe") -> dict[str, object]:
    if fd < 0:
        return {"error": ["crashed", "the prober received no descriptor for this file"]}
    try:
        if op != "probe":
            return {"ok": OPERATIONS[op](fd)}
        found = dataclasses.replace(probe_descriptor(fd), fingerprint=fingerprint(fd))
        return {"ok": result_to_json(found)}
    except ProbeError as exc:
        return {"error": [exc.reason, exc.message]}
    except OSError as exc:
        return {"error": ["unreadable", f"cannot read the file: {exc.strerror or exc}"]}
    except Exception as exc:  # a PyAV surprise costs this file, not the worker
        return {"error": ["corrupt", f"the probe failed: {type(exc).__name__}: {exc}"]}


if __name__ == "__main__":
    serve()
