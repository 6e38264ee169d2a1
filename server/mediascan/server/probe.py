"""Probing one file with PyAV (FFmpeg's libraries in-process: no ffprobe start-up per file).

`probe_file` is blocking. The server runs it in prober processes (`probe_pool.py`), each started
as `python -m mediascan.server.probe` (`serve`). A prober never opens a file by its path: its
stdin is a Unix socket on which the server sends batches of files as open descriptors
(`SCM_RIGHTS`) with their paths (for messages), and it reads each descriptor through
`/proc/self/fd/N` (the file the server opened, with no path lookup), answering one JSON line per
file on stdout. A probe reads the container header, the stream parameters (what ffprobe
-show_format -show_streams reports) and the first video packet; it never decodes frames.
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
from typing import Protocol

import av

from .fingerprint import fingerprint
from .prober_ops import OPERATIONS

#: FFmpeg demuxers that open anything (text, images) and must not count as videos.
_NOT_VIDEO_FORMATS = frozenset({"tty", "image2", "image2pipe", "lavfi", "bin", "txt"})

av.logging.set_level(av.logging.PANIC)  # corrupt files are reported per file, not on stderr


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeResult:
    """What a probe found in one file."""

    container: str
    duration_ns: int
    bit_rate: int
    video_codec: str
    width: int
    height: int
    frame_rate: float
    audio_codec: str
    audio_channels: int
    audio_sample_rate: int
    audio_streams: int
    #: The content fingerprint (`fingerprint.py`), read from the same descriptor.
    fingerprint: str = ""


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


def _codec_name(stream: av.stream.Stream) -> str:
    codec = stream.codec_context.codec
    return str(getattr(codec, "canonical_name", None) or stream.codec_context.name or "")


#: Files sent to a prober in one message at most (the pool's batch).
MAX_BATCH = 16
#: Largest message of paths a prober reads (16 paths of at most 4,096 bytes each, in JSON).
_MAX_MESSAGE = 1 << 20


def probe_descriptor(fd: int) -> ProbeResult:
    """Probe the open regular file `fd` (not by any path: through `/proc/self/fd`, the very file
    that was opened). Raises ProbeError when it is not a usable video."""
    if os.fstat(fd).st_nlink == 0:
        raise ProbeError("vanished", "the file vanished before it could be probed")
    return probe_file(f"/proc/self/fd/{fd}")


def probe_file(path: str) -> ProbeResult:
    """Read a file's format and streams. Raises ProbeError when it is not a usable video."""
    try:
        container = av.open(path, mode="r", metadata_errors="ignore")
    except FileNotFoundError as exc:
        raise ProbeError("vanished", "the file vanished before it could be probed") from exc
    except PermissionError as exc:
        raise ProbeError("unreadable", "cannot read the file: permission denied") from exc
    except av.error.FFmpegError as exc:
        raise ProbeError("corrupt", f"not a readable media file: {_ffmpeg_reason(exc)}") from exc
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ProbeError("unreadable", f"cannot read the file: {reason}") from exc
    with container:
        format_name = container.format.name
        if format_name in _NOT_VIDEO_FORMATS:
            raise ProbeError("not_video", f"not a video: FFmpeg reads it as {format_name!r}")
        videos = [s for s in container.streams.video if not _is_cover_art(s)]
        if not videos:
            raise ProbeError("not_video", "not a video: the file has no video stream")
        video = videos[0]
        duration_ns = _duration_ns(container, video)
        if duration_ns <= 0:
            raise ProbeError("corrupt", "the video stream has no duration (truncated or broken)")
        width = int(video.codec_context.width or 0)
        height = int(video.codec_context.height or 0)
        if width <= 0 or height <= 0:
            raise ProbeError("corrupt", "the video stream has no frame size")
        _require_a_packet(container, video)
        rate = video.average_rate
        audios = list(container.streams.audio)
        audio = audios[0] if audios else None
        return ProbeResult(
            container=format_name,
            duration_ns=duration_ns,
            bit_rate=int(container.bit_rate or 0),
            video_codec=_codec_name(video),
            width=width,
            height=height,
            frame_rate=float(rate) if rate else 0.0,
            audio_codec=_codec_name(audio) if audio is not None else "",
            audio_channels=_channels(audio) if audio is not None else 0,
            audio_sample_rate=int(audio.codec_context.sample_rate or 0) if audio else 0,
            audio_streams=len(audios),
        )


def _require_a_packet(container: av.container.InputContainer, video: av.stream.Stream) -> None:
    """A header alone is not a video: a truncated file often keeps a valid header and loses
    the media. Reading the first packet of the video stream costs one small read."""
    try:
        for packet in container.demux(video):
            if packet.size:
                return
    except av.error.FFmpegError as exc:
        raise ProbeError("corrupt", f"the video data is unreadable: {_ffmpeg_reason(exc)}") from exc
    raise ProbeError("corrupt", "the file holds no video data (truncated or broken)")


def _is_cover_art(stream: av.stream.Stream) -> bool:
    disposition = getattr(stream, "disposition", None)
    attached = getattr(av.stream.Disposition, "attached_pic", None) if disposition else None
    return bool(attached is not None and disposition & attached)


def _duration_ns(container: av.container.InputContainer, video: av.stream.Stream) -> int:
    if container.duration is not None and container.duration > 0:
        return int(container.duration) * 1000  # AV_TIME_BASE is microseconds
    if video.duration is not None and video.time_base is not None:
        return int(video.duration * video.time_base * 1_000_000_000)
    return 0


def _channels(stream: av.stream.Stream) -> int:
    context = stream.codec_context
    layout = getattr(context, "layout", None)
    if layout is not None and getattr(layout, "nb_channels", None):
        return int(layout.nb_channels)
    return int(getattr(context, "channels", 0) or 0)


def _ffmpeg_reason(exc: av.error.FFmpegError) -> str:
    message = getattr(exc, "strerror", None) or str(exc)
    if getattr(exc, "errno", None) == errno.ENOENT:
        return "file not found"
    return str(message)


def _die_with_parent() -> None:
    """Ask Linux to kill this prober when the server dies, even while a probe hangs (a hung
    probe never reads the closed stdin that would otherwise end it)."""
    parent = os.getppid()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:  # the server died before prctl took effect
        os._exit(1)


_PR_SET_PDEATHSIG = 1


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
        return {"ok": dataclasses.asdict(found)}
    except ProbeError as exc:
        return {"error": [exc.reason, exc.message]}
    except OSError as exc:
        return {"error": ["unreadable", f"cannot read the file: {exc.strerror or exc}"]}
    except Exception as exc:  # a PyAV surprise costs this file, not the worker
        return {"error": ["corrupt", f"the probe failed: {type(exc).__name__}: {exc}"]}


if __name__ == "__main__":
    serve()
