"""Helpers for testing mediascan and code that talks to it.

Real media, not mocks: `make_video` encodes a small video file with PyAV, `make_corpus` builds a
folder of valid videos of several containers and codecs plus broken and non-video files, and
`make_many` fills a folder with many tiny videos for scans that should take a while.

The gRPC helpers read the rich error details of a failed call (`rich_status`, `field_violations`,
`retry_delay`) and collect the events of a `WatchJob` stream (`watch_events`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import shutil
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import grpc
from google.rpc import error_details_pb2, status_pb2

from mediascan.v1 import scan_pb2

from .jobs import TERMINAL, seconds_to_duration
from .store import Store, VideoRow
from .store.factory import ServerStore
from .store.postgres.store import PostgresStore

__all__ = [
    "TERMINAL_STATES",
    "Corpus",
    "VideoSpec",
    "duration",
    "event_job",
    "event_state",
    "field_violations",
    "final_job",
    "make_corpus",
    "make_many",
    "make_video",
    "retry_delay",
    "rich_status",
    "wait_for_event",
    "wait_for_progress",
    "wait_for_running",
    "wait_for_state",
    "watch_events",
]

#: Container format PyAV is told to write, by file extension.
_FORMAT_BY_SUFFIX = {
    ".mp4": "mp4",
    ".m4v": "mp4",
    ".mkv": "matroska",
    ".webm": "webm",
    ".mov": "mov",
    ".avi": "avi",
    ".ts": "mpegts",
    ".mpg": "mpeg",
    ".mpeg": "mpeg",
}

#: The codec names a prober reports (FFmpeg's canonical names), by the encoder we ask for.
_CANONICAL_CODEC = {
    "h264": "h264",
    "libx264": "h264",
    "libvpx": "vp8",
    "vp8": "vp8",
    "libvpx-vp9": "vp9",
    "vp9": "vp9",
    "mpeg4": "mpeg4",
    "mpeg2video": "mpeg2video",
    "aac": "aac",
    "opus": "opus",
    "libopus": "opus",
    "mp3": "mp3",
    "libmp3lame": "mp3",
    "ac3": "ac3",
}

#: The container names FFmpeg reports when it reads a file back, by file extension.
_DEMUXER_BY_SUFFIX = {
    ".mp4": "mov,mp4,m4a,3gp,3g2,mj2",
    ".m4v": "mov,mp4,m4a,3gp,3g2,mj2",
    ".mov": "mov,mp4,m4a,3gp,3g2,mj2",
    ".mkv": "matroska,webm",
    ".webm": "matroska,webm",
    ".avi": "avi",
    ".ts": "mpegts",
}

#: Audio samples handed to the encoder per frame (the encoder re-chunks to its own frame size).
_AUDIO_CHUNK = 1024


@dataclasses.dataclass(frozen=True, kw_only=True)
class VideoSpec:
    """How one generated video was made, and what a prober should read back from it."""

    path: Path
    #: FFmpeg's demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2" or "matroska,webm".
    container: str
    #: Canonical video codec name, e.g. "h264", "vp8".
    video_codec: str
    width: int
    height: int
    fps: int
    seconds: float
    #: Canonical audio codec name of every audio stream; empty without audio.
    audio_codec: str = ""
    audio_streams: int = 0
    sample_rate: int = 0
    #: Audio channels of each audio stream (stereo); 0 without audio.
    audio_channels: int = 0


@dataclasses.dataclass(frozen=True, kw_only=True)
class Corpus:
    """A generated folder tree for scan tests.

    `valid` are real videos, `bad` are files with video extensions that cannot be probed (each must
    become a per-file error), `ignored` are non-video files a scan must skip without counting them.
    """

    root: Path
    valid: tuple[Path, ...]
    bad: tuple[Path, ...]
    ignored: tuple[Path, ...]
    #: How each valid video was made, in the order of `valid`.
    specs: tuple[VideoSpec, ...] = ()

    @property
    def video_files(self) -> tuple[Path, ...]:
        """Every file a scan counts: valid and bad."""
        return self.valid + self.bad


def canonical_codec(name: str) -> str:
    """The name a prober reports for a stream made with the encoder `name`."""
    return _CANONICAL_CODEC.get(name, name)


def make_video(
    path: Path | str,
    *,
    container_format: str | None = None,
    codec: str = "h264",
    width: int = 320,
    height: int = 240,
    fps: int = 25,
    seconds: float = 1.0,
    audio_codec: str | None = None,
    audio_streams: int = 1,
    sample_rate: int = 48000,
) -> VideoSpec:
    """Encode a small real video (moving flat colours, silent stereo audio) at `path`.

    `container_format` defaults to the one the extension names. `codec` and `audio_codec` are PyAV
    encoder names (`h264`, `libvpx`, `libvpx-vp9`, `mpeg4`, `mpeg2video`; `aac`, `libopus`,
    `libmp3lame`, ...). `audio_codec=None` writes no audio; otherwise `audio_streams` audio
    streams. With `codec=""` only audio is written (an audio-only file).
    Returns the spec of what was written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = container_format or _FORMAT_BY_SUFFIX.get(path.suffix.lower())
    frames = round(fps * seconds)
    with av.open(str(path), "w", format=fmt) as container:
        video: Any = None
        if codec:
            video = container.add_stream(codec, rate=fps)
            video.width = width
            video.height = height
            video.pix_fmt = "yuv420p"
        audios: list[Any] = []
        if audio_codec is not None:
            for _ in range(audio_streams):
                audio: Any = container.add_stream(audio_codec, rate=sample_rate)
                audio.layout = "stereo"
                audios.append(audio)
        if video is not None:
            _write_frames(container, video, frames, fps)
        for audio in audios:
            _write_silence(container, audio, round(sample_rate * seconds), sample_rate)
    has_audio = audio_codec is not None and audio_streams > 0
    return VideoSpec(
        path=path,
        container=_DEMUXER_BY_SUFFIX.get(path.suffix.lower(), fmt or ""),
        video_codec=canonical_codec(codec),
        width=width if codec else 0,
        height=height if codec else 0,
        fps=fps,
        seconds=seconds,
        audio_codec=canonical_codec(audio_codec) if has_audio and audio_codec else "",
        audio_streams=audio_streams if has_audio else 0,
        sample_rate=sample_rate if has_audio else 0,
        audio_channels=2 if has_audio else 0,
    )


def _write_frames(container: Any, video: Any, frames: int, fps: int) -> None:
    """Moving flat colours: each plane one shade that changes from frame to frame."""
    for index in range(frames):
        frame = av.VideoFrame(video.width, video.height, "yuv420p")
        for plane_index, plane in enumerate(frame.planes):
            shade = (index * 9 + plane_index * 70) % 256
            plane.update(bytes([shade]) * plane.buffer_size)
        frame.pts = index
        frame.time_base = Fraction(1, fps)
        container.mux(video.encode(frame))
    container.mux(video.encode(None))


def _write_silence(container: Any, audio: Any, samples: int, sample_rate: int) -> None:
    """`samples` of stereo silence, in chunks of _AUDIO_CHUNK."""
    pts = 0
    while pts < samples:
        chunk = av.AudioFrame(format="fltp", layout="stereo", samples=_AUDIO_CHUNK)
        for audio_plane in chunk.planes:
            audio_plane.update(bytes(audio_plane.buffer_size))
        chunk.sample_rate = sample_rate
        chunk.pts = pts
        chunk.time_base = Fraction(1, sample_rate)
        pts += _AUDIO_CHUNK
        container.mux(audio.encode(chunk))
    container.mux(audio.encode(None))


def _encoder_available(name: str) -> bool:
    try:
        av.Codec(name, "w")
    except Exception:  # PyAV raises its own error classes for an unknown encoder
        return False
    return True


def make_corpus(root: Path) -> Corpus:
    """Build a folder tree of valid, broken and non-video files under `root` (created if needed).

    Layout (nested on purpose, so that recursion matters)::

        root/clip-h264-aac.mp4            root/bad/empty.mp4         (zero bytes)
        root/odd-322x180.mp4              root/bad/deep/truncated.mkv (first 1 KiB of a video)
        root/movies/clip-h264-opus.mkv    root/bad/random.avi        (random bytes)
        root/movies/two-audio.mkv         root/bad/readme.mov        (a text file)
        root/movies/web/clip-vp8.webm     root/bad/audio-only.mp4    (aac, no video stream)
        root/movies/web/clip-vp9.webm     root/notes.txt, root/movies/cover.jpg (ignored)
        root/old/clip-mpeg4-aac.mov
        root/old/deeper/clip-mpeg4-mp3.avi
        root/old/deeper/clip-mpeg2-mp3.ts
    """
    root.mkdir(parents=True, exist_ok=True)
    specs = _valid_videos(root)
    bad = _bad_files(root / "bad")
    notes = root / "notes.txt"
    notes.write_text("Holiday videos, 2023.\n")
    cover = root / "movies" / "cover.jpg"
    cover.write_bytes(b"\xff\xd8\xff\xe0" + bytes(200) + b"\xff\xd9")
    ignored = (notes, cover)
    return Corpus(
        root=root,
        valid=tuple(spec.path for spec in specs),
        bad=bad,
        ignored=ignored,
        specs=tuple(specs),
    )


def _valid_videos(root: Path) -> list[VideoSpec]:
    """The corpus's valid videos: several containers, codecs and sizes, nested."""
    vp9 = "libvpx-vp9" if _encoder_available("libvpx-vp9") else "libvpx"
    return [
        make_video(root / "clip-h264-aac.mp4", codec="h264", audio_codec="aac"),
        make_video(root / "odd-322x180.mp4", codec="h264", width=322, height=180),
        make_video(
            root / "movies" / "clip-h264-opus.mkv",
            codec="h264",
            width=160,
            height=120,
            audio_codec="libopus",
        ),
        make_video(
            root / "movies" / "two-audio.mkv",
            codec="h264",
            width=176,
            height=144,
            audio_codec="aac",
            audio_streams=2,
            sample_rate=44100,
        ),
        make_video(
            root / "movies" / "web" / "clip-vp8.webm",
            codec="libvpx",
            width=192,
            height=108,
            audio_codec="libopus",
        ),
        make_video(root / "movies" / "web" / "clip-vp9.webm", codec=vp9, width=128, height=96),
        make_video(root / "old" / "clip-mpeg4-aac.mov", codec="mpeg4", fps=24, audio_codec="aac"),
        make_video(
            root / "old" / "deeper" / "clip-mpeg4-mp3.avi",
            codec="mpeg4",
            width=160,
            height=120,
            audio_codec="libmp3lame",
            sample_rate=44100,
        ),
        make_video(
            root / "old" / "deeper" / "clip-mpeg2-mp3.ts",
            codec="mpeg2video",
            width=160,
            height=120,
            audio_codec="libmp3lame",
        ),
    ]


def _bad_files(bad_dir: Path) -> tuple[Path, ...]:
    """The corpus's broken files: empty, truncated, random bytes, text, audio only."""
    (bad_dir / "deep").mkdir(parents=True, exist_ok=True)
    empty = bad_dir / "empty.mp4"
    empty.write_bytes(b"")
    truncated = bad_dir / "deep" / "truncated.mkv"
    whole = bad_dir / "deep" / "whole.tmp"
    make_video(whole, container_format="matroska", codec="h264", audio_codec="aac")
    truncated.write_bytes(whole.read_bytes()[:1024])
    whole.unlink()
    noise = bad_dir / "random.avi"
    noise.write_bytes(random.Random(20240611).randbytes(8192))
    text = bad_dir / "readme.mov"
    text.write_text("This is not a movie.\nIt is a text file with a video extension.\n" * 20)
    audio_only = bad_dir / "audio-only.mp4"
    make_video(audio_only, codec="", audio_codec="aac")
    return (empty, truncated, noise, text, audio_only)


#: `make_many` options for videos that are slow to probe: FFmpeg decodes a little of each of
#: eight audio streams.
SLOW_PROBE: dict[str, Any] = {"audio_codec": "aac", "audio_streams": 8}


def make_many(root: Path, n: int, *, suffix: str = ".mp4", **video_options: Any) -> list[Path]:
    """Fill `root` with `n` tiny valid videos (one encoded, then copied) and return their paths.

    The copies are real, separate files, so a scan of `root` probes `n` videos. `video_options`
    go to `make_video` for the one encoded video (default: 64x48, 0.2 s, no audio); e.g.
    `audio_codec="aac", audio_streams=8` makes each probe several times slower.
    """
    root.mkdir(parents=True, exist_ok=True)
    seed = root / f".seed{suffix}.tmp"
    options: dict[str, Any] = {"width": 64, "height": 48, "seconds": 0.2}
    options.update(video_options)
    make_video(seed, container_format=_FORMAT_BY_SUFFIX.get(suffix), **options)
    paths = [root / f"v{index:05d}{suffix}" for index in range(n)]
    for path in paths:
        shutil.copyfile(seed, path)
    seed.unlink()
    return paths


#: A `google.protobuf.Duration` of `seconds` (may be negative).
duration = seconds_to_duration


def rich_status(error: grpc.aio.AioRpcError) -> status_pb2.Status | None:
    """The `google.rpc.Status` of a failed call's `grpc-status-details-bin` trailer, if any.

    Raises AssertionError when its code or message disagree with the call's own status.
    """
    metadata: Any = error.trailing_metadata() or ()
    for key, value in metadata:
        if key == "grpc-status-details-bin":
            assert isinstance(value, bytes)
            status = status_pb2.Status.FromString(value)
            assert status.code == error.code().value[0], (status.code, error.code())
            assert status.message == error.details(), (status.message, error.details())
            return status
    return None


def field_violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    """The BadRequest field violations of a failed call, as {field: description}."""
    status = rich_status(error)
    violations: dict[str, str] = {}
    if status is None:
        return violations
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad_request = error_details_pb2.BadRequest()
            detail.Unpack(bad_request)
            for violation in bad_request.field_violations:
                violations[violation.field] = violation.description
    return violations


def retry_delay(error: grpc.aio.AioRpcError) -> float | None:
    """The RetryInfo delay of a failed call in seconds, or None without a RetryInfo detail."""
    status = rich_status(error)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return float(info.retry_delay.ToNanoseconds()) / 1e9
    return None


async def watch_events(
    stub: Any,
    job_id: str,
    *,
    after_sequence: int = 0,
    timeout: float = 60.0,
    stop_after: int | None = None,
) -> list[scan_pb2.JobEvent]:
    """Read a WatchJob stream until it closes (or after `stop_after` events) within `timeout`.

    `stub` is a `ScanServiceStub` on a `grpc.aio` channel. Raises `grpc.aio.AioRpcError` when the
    stream ends with an error, `TimeoutError` when it neither closes nor fills up in time.
    """
    events: list[scan_pb2.JobEvent] = []
    call = stub.WatchJob(scan_pb2.WatchJobRequest(job_id=job_id, after_sequence=after_sequence))
    try:
        async with asyncio.timeout(timeout):
            async for event in call:
                events.append(event)
                if stop_after is not None and len(events) >= stop_after:
                    break
    finally:
        call.cancel()
    return events


#: The JobState values a job never leaves.
TERMINAL_STATES: frozenset[int] = frozenset(int(state) for state in TERMINAL)


def event_job(event: scan_pb2.JobEvent) -> scan_pb2.Job | None:
    """The job a snapshot or state change event carries; None for progress and file errors."""
    kind = event.WhichOneof("kind")
    if kind == "snapshot":
        return event.snapshot.job
    if kind == "state_change":
        return event.state_change.job
    return None


def job_seconds(job: scan_pb2.Job) -> float:
    """A finished job's run time (start to end) in seconds, as the server recorded it."""
    return (job.end_time.ToNanoseconds() - job.start_time.ToNanoseconds()) / 1e9


def event_state(event: scan_pb2.JobEvent) -> int | None:
    """The job state an event reports (snapshot or state change), else None."""
    if event.WhichOneof("kind") == "state_change":
        return int(event.state_change.to_state)
    job = event_job(event)
    return None if job is None else int(job.state)


async def wait_for_event(
    stub: Any,
    job_id: str,
    predicate: Callable[[scan_pb2.JobEvent], bool],
    *,
    timeout: float = 60.0,
) -> scan_pb2.JobEvent:
    """Watch a job until an event satisfies `predicate` and return that event.

    Raises AssertionError when the stream closes first, TimeoutError after `timeout` seconds.
    """
    seen: list[str] = []
    call = stub.WatchJob(scan_pb2.WatchJobRequest(job_id=job_id))
    try:
        async with asyncio.timeout(timeout):
            async for event in call:
                if predicate(event):
                    return event  # type: ignore[no-any-return]
                seen.append(f"{event.sequence}:{event.WhichOneof('kind')}:{event_state(event)}")
    finally:
        call.cancel()
    raise AssertionError(f"job {job_id}: the stream closed before the awaited event; saw {seen}")


async def wait_for_state(
    stub: Any, job_id: str, *states: int, timeout: float = 60.0
) -> scan_pb2.Job:
    """Watch a job until it is in one of `states`; the job as that event shows it."""
    event = await wait_for_event(stub, job_id, lambda e: event_state(e) in states, timeout=timeout)
    job = event_job(event)
    assert job is not None
    return job


async def wait_for_running(stub: Any, job_id: str, *, timeout: float = 60.0) -> None:
    """Watch a job until it is seen running: a state RUNNING, or any progress event (only a
    running job makes progress)."""
    await wait_for_event(
        stub,
        job_id,
        lambda e: (
            event_state(e) == scan_pb2.JOB_STATE_RUNNING or e.WhichOneof("kind") == "progress"
        ),
        timeout=timeout,
    )


async def wait_for_progress(
    stub: Any, job_id: str, files_done: int = 1, *, timeout: float = 60.0
) -> scan_pb2.Progress:
    """Watch a job until its progress shows at least `files_done` files handled."""

    def enough(event: scan_pb2.JobEvent) -> bool:
        if event.WhichOneof("kind") == "progress":
            return event.progress.files_done >= files_done
        job = event_job(event)
        return job is not None and job.progress.files_done >= files_done

    event = await wait_for_event(stub, job_id, enough, timeout=timeout)
    if event.WhichOneof("kind") == "progress":
        return event.progress
    job = event_job(event)
    assert job is not None
    return job.progress


async def final_job(stub: Any, job_id: str, *, timeout: float = 60.0) -> scan_pb2.Job:
    """Watch a job until its stream closes and return the terminal job of the last event."""
    events = await watch_events(stub, job_id, timeout=timeout)
    assert events, f"job {job_id}: empty WatchJob stream"
    job = event_job(events[-1])
    assert job is not None, f"job {job_id}: the stream ended on {events[-1]}"
    assert job.state in TERMINAL_STATES, f"job {job_id}: stream closed in state {job.state}"
    return job


def library_rows(count: int, *, root: str = "/media/library", start: int = 0) -> list[VideoRow]:
    """`count` videos in 50 folders under `root`, as a scan would store them (codecs h264, hevc
    and vp9 in turn, durations from 1 minute up, every fourth without audio): a large library
    without probing a single file. Store them with `store_videos`; `start` numbers them on from
    an earlier call's (a library written a chunk at a time)."""
    return [
        VideoRow(
            path=f"{root}/folder-{i % 50:02d}/episode-{i:06d}.mkv",
            size_bytes=1_000_000 + i,
            mtime_ns=1_700_000_000_000_000_000 + i,
            container="matroska,webm",
            duration_ns=(60 + i % 3600) * 1_000_000_000,
            bit_rate=2_000_000,
            video_codec=("h264", "hevc", "vp9")[i % 3],
            width=1920,
            height=1080,
            frame_rate=25.0,
            audio_codec="aac" if i % 4 else "",
            audio_channels=2 if i % 4 else 0,
            audio_sample_rate=48000 if i % 4 else 0,
            audio_streams=1 if i % 4 else 0,
            probe_ns=1_700_000_000_000_000_000,
            job_id="j_01M8HSENJET22K5YPRFGZMC45C",
            dev=0,
        )
        for i in range(start, start + count)
    ]


async def store_videos(db: Path | str, rows: list[VideoRow]) -> None:
    """Write `rows` into the library of the database `db` (a SQLite file, created if need be,
    or a PostgreSQL URL), as a server's store does; start a server on `db` afterwards."""
    store: ServerStore = Store(db) if isinstance(db, Path) else PostgresStore(db)
    await store.open()
    try:
        await store.upsert_videos(rows)
    finally:
        await store.close()
