"""Which names a scan takes for videos (issue 14 §5): the default set covers the camcorder,
DVD, broadcast and legacy extensions (.mts, .m2t, .vob, .mxf, .asf, .m2v, .f4v, .divx, .ogm,
.rm/.rmvb, ...) in any case; `--extensions` replaces the set or, with `+`, extends it. Real files
made with PyAV and ffmpeg, scanned by a real server over gRPC."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
from _library_helpers import library, real, scan

from mediascan.server.config import Config
from mediascan.server.testing import make_video
from mediascan.server.videonames import VIDEO_SUFFIXES, is_video_name, parse_extensions
from mediascan.v1 import scan_pb2

FFMPEG_TEST_PATTERN = (
    "ffmpeg",
    "-v",
    "error",
    "-y",
    "-f",
    "lavfi",
    "-i",
    "testsrc=size=64x48:rate=10",
    "-t",
    "0.3",
)
NEW_DEFAULTS = ("mts", "m2t", "vob", "mxf", "asf", "m2v", "f4v", "divx", "ogm", "rm", "rmvb")


def test_the_default_set_names_the_common_video_extensions_in_any_case() -> None:
    for extension in (*NEW_DEFAULTS, "mp4", "mkv", "webm", "ts", "m2ts", "wmv"):
        assert is_video_name(f"clip.{extension}"), extension
        assert is_video_name(f"CLIP.{extension.upper()}"), extension
    for name in ("song.mp3", "cover.jpg", "notes.txt", "mp4", "archive.mp4.part", ".hidden"):
        assert not is_video_name(name), name


def test_extensions_replace_or_extend_the_set() -> None:
    assert parse_extensions("") == VIDEO_SUFFIXES
    assert parse_extensions("mp4, .MKV") == {".mp4", ".mkv"}
    extended = parse_extensions("+vid,+.DV")
    assert extended == VIDEO_SUFFIXES | {".vid", ".dv"}
    for bad, says in (("+vid,mkv", "prefix every one"), ("m p4", "not a file name extension")):
        with pytest.raises(ValueError, match=says):
            parse_extensions(bad)
    with pytest.raises(ValueError, match="--extensions"):
        Config(extensions="a/b")
    assert Config(extensions="+vid").video_suffixes == extended - {".dv"}


def _ffmpeg(path: Path, *args: str) -> Path:
    """A 0.3 s 64x48 test pattern written by ffmpeg with `args` (codec, format)."""
    subprocess.run(
        [*FFMPEG_TEST_PATTERN, *args, str(path)],
        check=True,
        timeout=60,
    )
    return path


def _song_with_cover_art(path: Path, cover: Path) -> Path:
    """An audio-only file with an attached picture (cover art), under a video extension."""
    picture = ("-f", "lavfi", "-i", "color=red:s=64x64:d=0.04", "-frames:v", "1", str(cover))
    subprocess.run(["ffmpeg", "-v", "error", "-y", *picture], check=True, timeout=60)
    inputs = ("-f", "lavfi", "-i", "sine=d=1", "-i", str(cover), "-map", "0", "-map", "1")
    codecs = ("-c:a", "aac", "-c:v", "png", "-disposition:v", "attached_pic", str(path))
    subprocess.run(["ffmpeg", "-v", "error", "-y", *inputs, *codecs], check=True, timeout=60)
    return path


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    """Real videos under the new default extensions (and an upper-case one), one under `.vid`
    (not a default), and a song with cover art named `.mp4`."""
    root = tmp_path / "camcorder"
    root.mkdir()
    make_video(root / "a.mts", container_format="mpegts", width=64, height=48, seconds=0.3)
    make_video(root / "B.M2T", container_format="mpegts", width=64, height=48, seconds=0.3)
    _ffmpeg(root / "c.vob", "-c:v", "mpeg2video", "-f", "vob")
    _ffmpeg(root / "d.m2v", "-c:v", "mpeg2video", "-f", "mpeg2video")
    make_video(root / "e.f4v", container_format="mp4", width=64, height=48, seconds=0.3)
    _ffmpeg(root / "f.asf", "-c:v", "msmpeg4v2", "-f", "asf")
    make_video(root / "g.vid", container_format="mp4", width=64, height=48, seconds=0.3)
    _song_with_cover_art(root / "song.mp4", tmp_path / "cover.png")
    return root


def _names(rows: dict[str, Any]) -> set[str]:
    return {Path(path).name for path in rows}


async def test_a_scan_takes_the_new_default_extensions(
    make_server: Any, connect: Any, folder: Path
) -> None:
    server = await make_server()
    stub = await connect(server.address)
    job = await scan(stub, folder)
    assert job.state == scan_pb2.JOB_STATE_SUCCEEDED, job
    found = _names(await library(stub, real(folder)))
    assert found == {"a.mts", "B.M2T", "c.vob", "d.m2v", "e.f4v", "f.asf"}, found
    # The raw MPEG-2 stream has no container duration: its 3 frames at 10 fps are counted.
    raw = await stub.GetVideo(scan_pb2.GetVideoRequest(path=real(folder / "d.m2v")))
    assert raw.duration_source == scan_pb2.DURATION_SOURCE_ESTIMATE
    assert (raw.duration.ToNanoseconds(), raw.frame_rate) == (300_000_000, 10.0)
    # An audio file with cover art stays out: a picture is not a video stream.
    refused = {Path(e.path).name: e.status.message for e in job.result.file_errors}
    assert set(refused) == {"song.mp4"}, refused
    assert "no video stream" in refused["song.mp4"], refused


async def test_extensions_extend_or_replace_what_a_scan_takes(
    make_server: Any, connect: Any, folder: Path, tmp_path: Path
) -> None:
    extended = await make_server(extensions="+vid", db=tmp_path / "extended.db")
    stub = await connect(extended.address)
    await scan(stub, folder)
    assert "g.vid" in _names(await library(stub, real(folder)))
    assert len(await library(stub, real(folder))) == 7

    only = await make_server(extensions="vid,vob", db=tmp_path / "only.db")
    stub = await connect(only.address)
    await scan(stub, folder)
    assert _names(await library(stub, real(folder))) == {"g.vid", "c.vob"}
