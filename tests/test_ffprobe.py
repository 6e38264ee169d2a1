"""Correctness against ffprobe (issue 3, section 6): after a scan, every valid file of a
generated corpus (mp4/h264, mkv/h264, webm/vp8 and vp9, mov/mpeg4, avi/mpeg4, an odd 322x180
resolution, two and three audio streams, nested folders) is stored with the duration (within one
frame), frame size, codec names and audio stream count that `ffprobe -show_format
-show_streams` reports; every bad file is a per-file error with a reason.

ffprobe is required, never skipped: Debian's `ffmpeg` package provides it (`.ci/run` installs
it)."""

from __future__ import annotations

import asyncio
import json
import shutil
from fractions import Fraction
from pathlib import Path
from typing import Any

import grpc
import pytest
from _library_helpers import SUCCEEDED, all_videos, errors_by_path, real, scan

from mediascan.server.testing import Corpus, VideoSpec, make_video
from mediascan.v1 import scan_pb2


@pytest.fixture(scope="module")
def ffprobe() -> str:
    path = shutil.which("ffprobe")
    if path is None:
        pytest.fail(
            "ffprobe is not installed: the library is checked against it. Install Debian's "
            "ffmpeg package (sudo apt-get install ffmpeg); .ci/run installs it in CI."
        )
    return path


@pytest.fixture(scope="module")
def extras(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[VideoSpec]]:
    """Files the shared corpus lacks: vp9 with opus, three audio streams, 30 fps over several
    seconds, mpeg4 without audio, an .m4v, another odd frame size."""
    root = tmp_path_factory.mktemp("ffprobe-extras")
    specs = [
        make_video(
            root / "vp9" / "vp9-opus.webm",
            codec="libvpx-vp9",
            width=176,
            height=100,
            audio_codec="libopus",
        ),
        make_video(
            root / "three-audio.mp4",
            codec="h264",
            width=160,
            height=90,
            audio_codec="aac",
            audio_streams=3,
        ),
        make_video(
            root / "long" / "deeper" / "h264-30fps.mkv",
            codec="h264",
            fps=30,
            seconds=2.5,
            audio_codec="aac",
            sample_rate=44100,
        ),
        make_video(root / "mpeg4-silent.avi", codec="mpeg4", width=200, height=150),
        make_video(root / "clip.m4v", codec="h264", width=242, height=136, audio_codec="aac"),
        make_video(root / "odd-vp8.webm", codec="libvpx", width=322, height=180, seconds=0.6),
    ]
    return root, specs


async def ffprobe_json(ffprobe: str, path: Path) -> tuple[int, dict[str, Any], str]:
    process = await asyncio.create_subprocess_exec(
        ffprobe,
        "-v",
        "error",
        "-show_format",
        "-show_streams",
        "-of",
        "json",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        out, err = await process.communicate()
    assert process.returncode is not None
    try:
        data = json.loads(out or b"{}")
    except ValueError:
        data = {}
    return process.returncode, data, err.decode(errors="replace")


def first_video(data: dict[str, Any]) -> dict[str, Any] | None:
    for stream in data.get("streams", []):
        if stream.get("codec_type") == "video" and not stream.get("disposition", {}).get(
            "attached_pic"
        ):
            return dict(stream)
    return None


def audio_streams(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in data.get("streams", []) if s.get("codec_type") == "audio"]


def rate(text: str) -> float:
    value = Fraction(text) if text and text != "0/0" else Fraction(0)
    return float(value)


async def test_library_matches_ffprobe_for_every_valid_file(
    stub: Any, corpus: Corpus, extras: tuple[Path, list[VideoSpec]], ffprobe: str
) -> None:
    extras_root, extra_specs = extras
    specs = [*corpus.specs, *extra_specs]
    # The corpus covers what the issue asks for (guard against a thinner make_corpus).
    kinds = {(s.path.suffix, s.video_codec) for s in specs}
    for kind in (
        (".mp4", "h264"),
        (".mkv", "h264"),
        (".webm", "vp8"),
        (".webm", "vp9"),
        (".mov", "mpeg4"),
        (".avi", "mpeg4"),
    ):
        assert kind in kinds, kind
    assert any((s.width, s.height) == (322, 180) for s in specs)
    assert any(s.audio_streams == 2 for s in specs)
    assert any(len(s.path.relative_to(corpus.root).parts) > 2 for s in corpus.specs)

    for root in (corpus.root, extras_root):
        job = await scan(stub, root)
        assert job.state == SUCCEEDED, job.error
    videos = {v.path: v for v in await all_videos(stub, page_size=1000)}
    probes = await asyncio.gather(*(ffprobe_json(ffprobe, s.path) for s in specs))

    rows: list[tuple[str, str, object, object]] = []
    mismatches: list[str] = []

    def compare(name: str, field: str, ours: object, theirs: object, ok: bool) -> None:
        rows.append((name, field, ours, theirs))
        if not ok:
            mismatches.append(f"{name}: {field}: ours {ours!r}, ffprobe {theirs!r}")

    for spec, (code, data, err) in zip(specs, probes, strict=True):
        name = spec.path.name
        assert code == 0 and not err.strip(), f"ffprobe failed on {spec.path}: {err}"
        video = videos.get(real(spec.path))
        assert video is not None, f"{spec.path} is not in the library"
        stream = first_video(data)
        assert stream is not None, f"ffprobe sees no video stream in {spec.path}"
        audios = audio_streams(data)
        fmt = data["format"]

        theirs_fps = rate(stream.get("avg_frame_rate", "")) or rate(stream.get("r_frame_rate", ""))
        frame = 1 / theirs_fps
        ours_s = video.duration.ToNanoseconds() / 1e9
        theirs_s = float(fmt["duration"])
        compare(name, "duration", round(ours_s, 6), theirs_s, abs(ours_s - theirs_s) <= frame)
        compare(name, "width", video.width, stream["width"], video.width == stream["width"])
        compare(name, "height", video.height, stream["height"], video.height == stream["height"])
        compare(
            name,
            "video_codec",
            video.video_codec,
            stream["codec_name"],
            video.video_codec == stream["codec_name"],
        )
        their_audio = audios[0]["codec_name"] if audios else ""
        compare(
            name, "audio_codec", video.audio_codec, their_audio, video.audio_codec == their_audio
        )
        compare(
            name,
            "audio_streams",
            video.audio_streams,
            len(audios),
            video.audio_streams == len(audios),
        )
        compare(
            name,
            "container",
            video.container,
            fmt["format_name"],
            video.container == fmt["format_name"],
        )
        compare(
            name,
            "frame_rate",
            round(video.frame_rate, 3),
            round(theirs_fps, 3),
            video.frame_rate == pytest.approx(theirs_fps, rel=1e-3),
        )
        if audios:
            channels = int(audios[0].get("channels", 0))
            sample_rate = int(audios[0].get("sample_rate", 0))
            compare(
                name,
                "audio_channels",
                video.audio_channels,
                channels,
                video.audio_channels == channels,
            )
            compare(
                name,
                "audio_sample_rate",
                video.audio_sample_rate,
                sample_rate,
                video.audio_sample_rate == sample_rate,
            )
        compare(
            name,
            "size_bytes",
            video.size_bytes,
            int(fmt["size"]),
            video.size_bytes == int(fmt["size"]),
        )

    table = "\n".join(f"{n:28} {f:18} {o!s:>26} {t!s:>26}" for n, f, o, t in rows)
    print(f"\n{'file':28} {'field':18} {'ours':>26} {'ffprobe':>26}\n{table}")
    assert not mismatches, "\n".join(mismatches)
    assert len(rows) >= 9 * len(specs)


async def test_every_bad_file_is_a_file_error_with_a_reason(
    stub: Any, corpus: Corpus, ffprobe: str
) -> None:
    job = await scan(stub, corpus.root)
    assert job.state == SUCCEEDED, job.error
    errors = errors_by_path(job)
    assert set(errors) == {real(p) for p in corpus.bad}
    assert job.result.failed == len(corpus.bad)
    for path in corpus.bad:
        code, message = errors[real(path)]
        assert code != grpc.StatusCode.OK, path
        assert len(message) > 10, (path, message)  # a reason, not a bare code
        # ffprobe agrees that there is no usable video in it.
        returncode, data, err = await ffprobe_json(ffprobe, path)
        stream = first_video(data)
        assert returncode != 0 or err.strip() or stream is None, (path, data)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetVideo(scan_pb2.GetVideoRequest(path=real(path)))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND, path
    # The contract's own example: a file without a video stream is INVALID_ARGUMENT.
    audio_only = next(p for p in corpus.bad if p.name == "audio-only.mp4")
    code, message = errors[real(audio_only)]
    assert code == grpc.StatusCode.INVALID_ARGUMENT, message
    assert "video stream" in message, message
    empty = next(p for p in corpus.bad if p.stat().st_size == 0)
    assert "empty" in errors[real(empty)][1] or "0 bytes" in errors[real(empty)][1]
