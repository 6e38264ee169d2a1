"""Real files for the cases the library must tell the truth about (issue 14, sections 1 and 2),
made with Debian's ffmpeg (FFmpeg 5.1) and PyAV (a newer FFmpeg): rotation, anamorphic, 10-bit,
HDR10 and HLG, variable frame rate, a thumbnail or preview track first, the default audio second,
chapters and tags, a timecode, interlaced, recordings without a duration, truncated halves and a
file past every cap.

What cannot be made here: Dolby Vision (no encoder here writes its RPU) and HDR10+ (Debian's
x265 and PyAV's are both built without it: "--dhdr10-info disabled. Enable HDR10_PLUS in
cmake."; no other encoder here writes SMPTE 2094-40 metadata). Their detection is tested on the
side data bytes FFmpeg gives for them (test_probe_truth.py)."""

from __future__ import annotations

import dataclasses
import subprocess
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av

FFMPEG = ("ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-nostdin")
TESTSRC = "testsrc=size=320x240:rate=25"
HDR10_PARAMS = (
    "log-level=error:hdr10=1:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc:"
    "master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1):"
    "max-cll=1000,400"
)


@dataclasses.dataclass(frozen=True)
class Made:
    """A file made for a case, and what it was made to be where ffprobe cannot say."""

    path: Path
    seconds: float  #: how long it was made to play


def ffmpeg(*args: str | Path) -> None:
    subprocess.run([*FFMPEG, *map(str, args)], check=True, timeout=120)


def ffmpeg_to_pipe(out: Path, *args: str) -> None:
    """ffmpeg writing to a pipe, as a live recorder does: the muxer cannot go back to write the
    duration or an index."""
    with out.open("wb") as sink:
        subprocess.run([*FFMPEG, *args, "pipe:1"], check=True, stdout=sink, timeout=120)


def rotated(path: Path, degrees: int) -> Made:
    """H.264 with a display matrix (PyAV: Debian's ffmpeg 5.1 has no -display_rotation)."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.set_display_rotation(degrees)
        _frames(container, stream, list(range(25)), Fraction(1, 25))
    return Made(path, 1.0)


def variable_frame_rate(path: Path) -> Made:
    """A phone slowing down in the dark: 30 frames 33 ms apart, then 20 frames 100 ms apart."""
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        stream.codec_context.time_base = Fraction(1, 1000)
        steps = [i * 33 for i in range(30)] + [990 + i * 100 for i in range(20)]
        _frames(container, stream, steps, Fraction(1, 1000))
    return Made(path, 2.99)


def _frames(
    container: av.container.OutputContainer,
    stream: av.VideoStream,
    pts: list[int],
    time_base: Fraction,
) -> None:
    for index, at in enumerate(pts):
        frame = av.VideoFrame(stream.width, stream.height, "yuv420p")
        for plane in frame.planes:
            plane.update(bytes([index * 9 % 256]) * plane.buffer_size)
        frame.pts, frame.time_base = at, time_base
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def chapters_file(path: Path, count: int, title_bytes: int = 12) -> Path:
    lines = [";FFMETADATA1", "title=A film with chapters", "encoder=mediascan tests"]
    for index in range(count):
        title = f"Chapter {index:03d} " + "x" * max(0, title_bytes - 12)
        lines += ["[CHAPTER]", "TIMEBASE=1/1000", f"START={index * 20}", f"END={index * 20 + 20}"]
        lines.append(f"title={title}")
    path.write_text("\n".join(lines) + "\n")
    return path


def subtitles_file(path: Path) -> Path:
    path.write_text("1\n00:00:00,000 --> 00:00:01,000\nHello\n")
    return path


def truncated_half(source: Made, path: Path) -> Made:
    """The first half of `source`'s bytes: a copy cut short, its header intact."""
    data = source.path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return Made(path, source.seconds / 2)


def make_cases(root: Path) -> dict[str, Made]:
    """Every case under `root`, by name."""
    root.mkdir(parents=True, exist_ok=True)
    made: dict[str, Made] = {}
    for name, maker in _MAKERS.items():
        made[name] = maker(root)
    made["half.mp4"] = truncated_half(made["whole.mp4"], root / "half.mp4")
    made["half.mkv"] = truncated_half(made["whole.mkv"], root / "half.mkv")
    return made


def _simple(name: str, seconds: float, *args: str) -> Callable[[Path], Made]:
    def make(root: Path) -> Made:
        ffmpeg("-f", "lavfi", "-i", f"{TESTSRC}:duration={seconds}", *args, root / name)
        return Made(root / name, seconds)

    return make


def _two_tracks(name: str, first: str, *options: str) -> Callable[[Path], Made]:
    """A small first video track (`first`: a lavfi source), then the main one (320x240, 2 s)."""

    def make(root: Path) -> Made:
        ffmpeg(
            *("-f", "lavfi", "-i", first, "-f", "lavfi", "-i", f"{TESTSRC}:duration=2"),
            *("-map", "0:v", "-map", "1:v", "-c:v", "libx264", *options, root / name),
        )
        return Made(root / name, 2.0)

    return make


def _audio_second(root: Path) -> Made:
    """Video, a French mono commentary (not default), English stereo (default), forced
    subtitles, chapters and container tags."""
    path = root / "default-audio-second.mkv"
    ffmpeg(
        *("-f", "lavfi", "-i", f"{TESTSRC}:duration=2"),
        *("-f", "lavfi", "-i", "sine=frequency=300:sample_rate=22050:duration=2"),
        *("-f", "lavfi", "-i", "sine=frequency=500:sample_rate=48000:duration=2"),
        *("-i", subtitles_file(root / "subs.srt")),
        *("-i", chapters_file(root / "chapters.txt", 3)),
        *("-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "3:s", "-map_chapters", "4"),
        *("-map_metadata", "4", "-c:v", "libx264", "-c:a", "aac", "-c:s", "srt"),
        *("-ac:a:1", "2", "-metadata:s:a:0", "language=fre", "-metadata:s:a:0", "title=Commentary"),
        *("-metadata:s:a:1", "language=eng", "-metadata:s:s:0", "language=eng"),
        *("-metadata", "creation_time=2024-05-06T07:08:09Z"),
        *("-disposition:a:0", "0", "-disposition:a:1", "default", "-disposition:s:0", "forced"),
        path,
    )
    return Made(path, 2.0)


def _past_the_caps(root: Path) -> Made:
    """40 subtitle streams and 100 chapters with 200-byte titles: more than a Video holds."""
    path = root / "past-the-caps.mkv"
    subs = subtitles_file(root / "many.srt")
    inputs = [arg for _ in range(40) for arg in ("-i", str(subs))]
    maps = [arg for index in range(40) for arg in ("-map", str(index + 1))]
    ffmpeg(
        *("-f", "lavfi", "-i", f"{TESTSRC}:duration=2"),
        *inputs,
        *("-i", chapters_file(root / "many-chapters.txt", 100, title_bytes=200)),
        *("-map", "0:v", *maps, "-map_chapters", "41", "-c:v", "libx264", "-c:s", "srt"),
        path,
    )
    return Made(path, 2.0)


def _live(name: str, fmt: str, codec: str) -> Callable[[Path], Made]:
    def make(root: Path) -> Made:
        ffmpeg_to_pipe(
            root / name,
            *("-f", "lavfi", "-i", f"{TESTSRC}:duration=2", "-f", "lavfi"),
            *("-i", "sine=duration=2", "-c:v", codec, "-c:a", "libopus", "-f", fmt),
        )
        return Made(root / name, 2.0)

    return make


_MAKERS: dict[str, Callable[[Path], Made]] = {
    "rot90.mp4": lambda root: rotated(root / "rot90.mp4", 90),
    "rot-90.mkv": lambda root: rotated(root / "rot-90.mkv", -90),
    "rot180.mov": lambda root: rotated(root / "rot180.mov", 180),
    "anamorphic.mkv": _simple("anamorphic.mkv", 2, "-vf", "setsar=4/3", "-pix_fmt", "yuv420p"),
    "x265-10bit.mkv": _simple(
        "x265-10bit.mkv",
        2,
        "-c:v",
        "libx265",
        "-x265-params",
        "log-level=error",
        "-pix_fmt",
        "yuv420p10le",
    ),
    "prores-422-10bit.mov": _simple(
        "prores-422-10bit.mov",
        1,
        "-c:v",
        "prores_ks",
        "-profile:v",
        "2",
        "-pix_fmt",
        "yuv422p10le",
    ),
    "hdr10.mkv": _simple(
        "hdr10.mkv",
        2,
        "-c:v",
        "libx265",
        "-pix_fmt",
        "yuv420p10le",
        "-x265-params",
        HDR10_PARAMS,
        "-color_primaries",
        "bt2020",
        "-color_trc",
        "smpte2084",
        "-colorspace",
        "bt2020nc",
    ),
    "hlg.mp4": _simple(
        "hlg.mp4",
        2,
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-color_primaries",
        "bt2020",
        "-color_trc",
        "arib-std-b67",
        "-colorspace",
        "bt2020nc",
    ),
    "interlaced.mkv": _simple(
        "interlaced.mkv",
        2,
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-flags",
        "+ildct+ilme",
        "-x264opts",
        "tff=1",
    ),
    "timecode.mov": _simple(
        "timecode.mov",
        2,
        "-c:v",
        "mpeg4",
        "-timecode",
        "01:02:03:04",
        "-metadata",
        "title=A timed film",
    ),
    "vfr.mp4": lambda root: variable_frame_rate(root / "vfr.mp4"),
    "thumbnail-first.mp4": _two_tracks(
        "thumbnail-first.mp4", "testsrc=size=160x90:rate=1:duration=1"
    ),
    "thumbnail-first.mkv": _two_tracks(  # Matroska counts no frames: the codec tells
        "thumbnail-first.mkv",
        "testsrc=size=160x120:rate=1:duration=1",
        "-c:v:0",
        "mjpeg",
        "-pix_fmt:v:0",
        "yuvj420p",
    ),
    "preview-first.mkv": _two_tracks(
        "preview-first.mkv",
        "testsrc=size=160x90:rate=5:duration=2",
        "-disposition:v:0",
        "0",
        "-disposition:v:1",
        "default",
    ),
    "default-audio-second.mkv": _audio_second,
    "past-the-caps.mkv": _past_the_caps,
    "live.webm": _live("live.webm", "webm", "libvpx"),
    "live.mkv": _live("live.mkv", "matroska", "libx264"),
    "raw.m2v": _simple("raw.m2v", 2, "-c:v", "mpeg2video", "-f", "mpeg2video"),
    "whole.mp4": _simple(
        "whole.mp4", 4, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-movflags", "+faststart"
    ),
    "whole.mkv": _simple("whole.mkv", 4, "-c:v", "libx264", "-pix_fmt", "yuv420p"),
}
