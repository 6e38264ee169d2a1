"""The library tells the truth about every video (issue 14, sections 1 and 2): real files made
for each case (`_media_cases.py`), scanned through a real server, compared with ffprobe field by
field where ffprobe knows the answer, and with what the file was made to be where it does not
(recordings without a duration, truncated copies).

ffprobe here is FFmpeg 5.1; the prober runs PyAV's FFmpeg 8. Where they differ the tests say
which is right:
- a variable frame rate MP4 (`vfr.mp4`): FFmpeg 8 reports 2.789 s, the sum of the sample
  durations, which ends before the last frame is shown (it starts at 2.890 s); the movie header
  and edit list state 2.924 s, which ffprobe 5.1 reports and the library stores;
- truncated halves: ffprobe reports the header's full length; the library stores what plays
  and keeps the header's claim in `header_duration`;
- no-duration recordings and raw streams: ffprobe says N/A; the library measures them."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import shutil
import struct
from pathlib import Path
from typing import Any

import pytest
from _library_helpers import SUCCEEDED, real, scan
from _media_cases import Made, make_cases

from mediascan.server import decode_check, mp4_header, probe_picture, probe_streams
from mediascan.server.decode_check import decode_file
from mediascan.server.probed import ProbeResult, result_to_json
from mediascan.server.testing import library_rows, store_videos
from mediascan.v1 import scan_pb2

#: ffprobe prints these for "not known"; the library leaves the field empty.
UNKNOWN = {"unknown", "N/A", "0:1", ""}


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Made]:
    if shutil.which("ffprobe") is None or shutil.which("ffmpeg") is None:
        pytest.fail("the tests need Debian's ffmpeg package (ffmpeg and ffprobe)")
    return make_cases(tmp_path_factory.mktemp("truth") / "videos")


@pytest.fixture
async def library(stub: Any, cases: dict[str, Made]) -> dict[str, scan_pb2.Video]:
    """Every case, scanned once, by name."""
    root = next(iter(cases.values())).path.parent
    job = await scan(stub, root)
    assert job.state == SUCCEEDED, job.error
    assert job.result.failed == 0, list(job.result.file_errors)
    videos = {}
    for name, made in cases.items():
        videos[name] = await stub.GetVideo(scan_pb2.GetVideoRequest(path=real(made.path)))
    return videos


async def ffprobe(path: Path, *args: str) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(
        *("ffprobe", "-v", "error", "-of", "json", *args, str(path)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
    )
    async with asyncio.timeout(30):
        out, _ = await process.communicate()
    return dict(json.loads(out or b"{}"))


async def probe_all(path: Path) -> dict[str, Any]:
    return await ffprobe(path, "-show_format", "-show_streams", "-show_chapters")


async def first_frame(path: Path, index: int) -> dict[str, Any]:
    data = await ffprobe(
        path, "-show_frames", "-read_intervals", "%+#1", "-select_streams", str(index)
    )
    frames = data.get("frames", [])
    return dict(frames[0]) if frames else {}


def known(value: object) -> str:
    text = str(value if value is not None else "")
    return "" if text in UNKNOWN else text


def side_data(entry: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((d for d in entry.get("side_data_list", []) if d["side_data_type"] == kind), {})


def rotation(stream: dict[str, Any]) -> int:
    degrees = int(side_data(stream, "Display Matrix").get("rotation", 0))
    return 180 if degrees == -180 else degrees


def ratio(text: str) -> float:
    top, _, bottom = text.partition("/")
    return float(top) / float(bottom or 1) if float(bottom or 1) else 0.0


class Table:
    """Rows of (file, field, ours, ffprobe); `check` records a mismatch."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, object, object]] = []
        self.mismatches: list[str] = []

    def check(self, name: str, field: str, ours: object, theirs: object, ok: bool | None = None):  # type: ignore[no-untyped-def]
        self.rows.append((name, field, ours, theirs))
        if not (ours == theirs if ok is None else ok):
            self.mismatches.append(f"{name}: {field}: ours {ours!r}, ffprobe {theirs!r}")

    def show(self) -> None:
        lines = [f"{n:26} {f:26} {o!s:>24} {t!s:>24}" for n, f, o, t in self.rows]
        print(f"\n{'file':26} {'field':26} {'ours':>24} {'ffprobe':>24}\n" + "\n".join(lines))


def compare_video(table: Table, name: str, video: scan_pb2.Video, data: dict[str, Any]) -> None:
    """The main video stream's fields against ffprobe's stream of the same index."""
    streams = data["streams"]
    main = streams[video.video_stream_index]
    check = table.check
    check(name, "video_stream kind", main["codec_type"], "video")
    check(name, "video_codec", video.video_codec, main["codec_name"])
    check(name, "width x height", (video.width, video.height), (main["width"], main["height"]))
    check(name, "pixel_format", video.pixel_format, main.get("pix_fmt", ""))
    if "bits_per_raw_sample" in main:
        check(name, "bit_depth", video.bit_depth, int(main["bits_per_raw_sample"]))
    check(name, "field_order", video.field_order, known(main.get("field_order")))
    for field in ("color_primaries", "color_transfer", "color_space", "color_range"):
        ours, theirs = getattr(video, field), known(main.get(field))
        # VP8 is BT.601 by its specification (RFC 6386, 9.2): FFmpeg 8's decoder says so,
        # FFmpeg 5.1 says nothing. The newer answer is the right one.
        vp8 = main["codec_name"] == "vp8" and field == "color_space" and not theirs
        check(name, field, ours, theirs, ours == theirs or (vp8 and ours == "bt470bg"))
    check(
        name,
        "sample_aspect_ratio",
        video.sample_aspect_ratio,
        known(main.get("sample_aspect_ratio")),
    )
    theirs_dar = known(main.get("display_aspect_ratio"))
    if theirs_dar:
        check(name, "display_aspect_ratio", video.display_aspect_ratio, theirs_dar)
    check(name, "rotation", video.rotation, rotation(main))
    rate = ratio(main.get("avg_frame_rate", "0/1"))
    check(name, "frame_rate", round(video.frame_rate, 3), round(rate, 3))


def compare_streams(table: Table, name: str, video: scan_pb2.Video, data: dict[str, Any]) -> None:
    """Every stream, and the main audio stream, against ffprobe's."""
    streams = data["streams"]
    check = table.check
    check(name, "stream_count", video.stream_count, int(data["format"]["nb_streams"]))
    for ours, theirs in zip(video.streams, streams, strict=False):
        where = f"{name}#{ours.index}"
        kind = scan_pb2.StreamKind.Name(ours.kind).removeprefix("STREAM_KIND_").lower()
        check(
            where,
            "index kind codec",
            (ours.index, kind, ours.codec),
            (theirs["index"], theirs["codec_type"], theirs.get("codec_name", "")),
        )
        tags = theirs.get("tags", {})
        language = tags.get("language", "")
        check(where, "language", ours.language, "" if language == "und" else language)
        check(where, "title", ours.title, tags.get("title", ""))
        disposition = theirs.get("disposition", {})
        check(
            where,
            "default forced",
            (ours.default, ours.forced),
            (bool(disposition.get("default")), bool(disposition.get("forced"))),
        )
        if theirs["codec_type"] == "audio":
            check(
                where,
                "audio",
                (ours.channels, ours.channel_layout, ours.sample_rate),
                (theirs["channels"], theirs.get("channel_layout", ""), int(theirs["sample_rate"])),
            )
        if theirs["codec_type"] == "video":
            check(where, "size", (ours.width, ours.height), (theirs["width"], theirs["height"]))
    audios = [s for s in streams if s["codec_type"] == "audio"]
    if audios:
        main = next((s for s in audios if s["disposition"]["default"]), audios[0])
        check(name, "audio_stream_index", video.audio_stream_index, main["index"])
        check(
            name,
            "audio",
            (video.audio_codec, video.audio_channels, video.audio_sample_rate),
            (main["codec_name"], main["channels"], int(main["sample_rate"])),
        )


def compare_tags(table: Table, name: str, video: scan_pb2.Video, data: dict[str, Any]) -> None:
    tags = data["format"].get("tags", {})
    lowered = {k.lower(): v for k, v in tags.items()}
    table.check(name, "title", video.title, lowered.get("title", ""))
    table.check(name, "encoder", video.encoder, lowered.get("encoder", ""))
    chapters = data.get("chapters", [])
    table.check(name, "chapter_count", video.chapter_count, len(chapters))
    for ours, theirs in zip(video.chapters, chapters, strict=False):
        times = (
            round(ours.start.ToNanoseconds() / 1e9, 3),
            round(ours.end.ToNanoseconds() / 1e9, 3),
        )
        their_times = (round(float(theirs["start_time"]), 3), round(float(theirs["end_time"]), 3))
        table.check(name, "chapter times", times, their_times)
        title = theirs.get("tags", {}).get("title", "")
        cut = video.metadata_cut and title.startswith(ours.title) and len(ours.title) >= 100
        table.check(name, "chapter title", ours.title[:24], title[:24], ours.title == title or cut)
    timecodes = [s.get("tags", {}).get("timecode", "") for s in data["streams"]]
    theirs_timecode = lowered.get("timecode", "") or next((t for t in timecodes if t), "")
    table.check(name, "timecode", video.timecode, theirs_timecode)


#: Cases whose duration ffprobe 5.1 does not know, or knows otherwise (tested below).
DURATION_DIFFERS = {"live.webm", "live.mkv", "raw.m2v", "half.mp4", "half.mkv"}


async def test_every_case_matches_ffprobe_field_by_field(
    library: dict[str, scan_pb2.Video], cases: dict[str, Made]
) -> None:
    table = Table()
    probes = await asyncio.gather(*(probe_all(made.path) for made in cases.values()))
    for (name, made), data in zip(cases.items(), probes, strict=True):
        video = library[name]
        compare_video(table, name, video, data)
        compare_streams(table, name, video, data)
        compare_tags(table, name, video, data)
        if name not in DURATION_DIFFERS:
            theirs = float(data["format"]["duration"])
            ours = video.duration.ToNanoseconds() / 1e9
            frame = 1 / (video.frame_rate or 25)
            table.check(name, "duration", round(ours, 3), theirs, abs(ours - theirs) <= frame)
            table.check(
                name, "duration_source", video.duration_source, scan_pb2.DURATION_SOURCE_HEADER
            )
        table.check(name, "prober_version", video.prober_version, 2)
        assert made.path.exists()
    table.show()
    assert not table.mismatches, "\n".join(table.mismatches)
    assert len(table.rows) > 400


async def test_rotation_and_display_size(library: dict[str, scan_pb2.Video]) -> None:
    shown = {
        name: (library[name].rotation, library[name].display_width, library[name].display_height)
        for name in ("rot90.mp4", "rot-90.mkv", "rot180.mov", "anamorphic.mkv")
    }
    assert shown == {
        "rot90.mp4": (90, 240, 320),
        "rot-90.mkv": (-90, 240, 320),
        "rot180.mov": (180, 320, 240),
        "anamorphic.mkv": (0, 427, 240),  # 320 x 4/3
    }
    assert library["anamorphic.mkv"].display_aspect_ratio == "16:9"


async def test_bit_depth_chroma_and_interlacing(library: dict[str, scan_pb2.Video]) -> None:
    ten = library["x265-10bit.mkv"]
    assert (ten.pixel_format, ten.bit_depth, ten.chroma_subsampling) == ("yuv420p10le", 10, "4:2:0")
    prores = library["prores-422-10bit.mov"]
    assert (prores.bit_depth, prores.chroma_subsampling, prores.alpha) == (10, "4:2:2", False)
    # The stream does not declare its field order (ffprobe: progressive); its first frame is
    # interlaced (x264's top field first), which `interlaced` says.
    interlaced = library["interlaced.mkv"]
    assert (interlaced.field_order, interlaced.interlaced) == ("progressive", True)
    assert not library["rot90.mp4"].interlaced


async def test_hdr_kinds_and_static_metadata_match_ffprobes_first_frame(
    library: dict[str, scan_pb2.Video], cases: dict[str, Made]
) -> None:
    hdr10 = library["hdr10.mkv"]
    assert hdr10.hdr == scan_pb2.HDR_KIND_HDR10
    frame = await first_frame(cases["hdr10.mkv"].path, hdr10.video_stream_index)
    mastering = side_data(frame, "Mastering display metadata")
    light = side_data(frame, "Content light level metadata")
    assert hdr10.mastering_max_luminance == pytest.approx(ratio(mastering["max_luminance"]))
    assert hdr10.mastering_min_luminance == pytest.approx(ratio(mastering["min_luminance"]))
    assert (hdr10.max_content_light_level, hdr10.max_frame_average_light_level) == (
        light["max_content"],
        light["max_average"],
    )
    assert library["hlg.mp4"].hdr == scan_pb2.HDR_KIND_HLG
    for name in ("rot90.mp4", "x265-10bit.mkv", "live.webm"):
        assert library[name].hdr == scan_pb2.HDR_KIND_NONE, name


async def test_the_main_streams_skip_a_thumbnail_track_and_follow_the_default_audio(
    library: dict[str, scan_pb2.Video],
) -> None:
    for name in ("thumbnail-first.mp4", "thumbnail-first.mkv", "preview-first.mkv"):
        video = library[name]
        assert (video.video_stream_index, video.width, video.frame_rate) == (1, 320, 25.0), name
    audio = library["default-audio-second.mkv"]
    assert (audio.audio_stream_index, audio.audio_channels, audio.audio_sample_rate) == (
        2,
        2,
        48000,
    )
    streams = {s.index: s for s in audio.streams}
    assert (streams[1].language, streams[1].title, streams[1].default) == (
        "fre",
        "Commentary",
        False,
    )
    assert streams[3].kind == scan_pb2.STREAM_KIND_SUBTITLE and streams[3].forced
    assert audio.creation_time.ToJsonString() == "2024-05-06T07:08:09Z"
    assert [c.title for c in audio.chapters] == ["Chapter 000 ", "Chapter 001 ", "Chapter 002 "]
    assert library["timecode.mov"].timecode == "01:02:03:04"


async def test_a_decode_check_decodes_the_main_video_not_a_thumbnail_first(
    cases: dict[str, Made],
) -> None:
    """DECODE verifies the stream the probe chose as the video: a one-frame thumbnail track
    first (marked default) made these files CORRUPT, "decoded up to 0.000s", while `ffmpeg
    -v error -f null` finds nothing wrong in them."""
    for name in ("thumbnail-first.mp4", "thumbnail-first.mkv", "preview-first.mkv"):
        report = await asyncio.to_thread(decode_file, str(cases[name].path))
        assert (report.health, report.error_count) == (decode_check.OK, 0), (name, report)
        assert report.decoded_ns >= 1_900_000_000, (name, report)  # the 2 s video, decoded


async def test_recordings_without_a_duration_are_measured(
    library: dict[str, scan_pb2.Video], cases: dict[str, Made]
) -> None:
    """ffprobe says N/A; the library measures the packets (Matroska, WebM) or estimates from
    the bytes per frame (a raw MPEG-2 stream, counted whole when it is this small)."""
    expected = {
        "live.webm": scan_pb2.DURATION_SOURCE_PACKETS,
        "live.mkv": scan_pb2.DURATION_SOURCE_PACKETS,
        "raw.m2v": scan_pb2.DURATION_SOURCE_ESTIMATE,
    }
    for name, source in expected.items():
        data = await probe_all(cases[name].path)
        assert "duration" not in data["format"], (name, data["format"])  # ffprobe: N/A
        video = library[name]
        assert video.duration_source == source, name
        seconds = video.duration.ToNanoseconds() / 1e9
        # The audio of the live recordings ends one Opus frame (20 ms) after the video.
        assert seconds == pytest.approx(cases[name].seconds, abs=0.041), name
        assert not video.truncated


async def test_truncated_halves_are_flagged_with_what_plays(
    library: dict[str, scan_pb2.Video], cases: dict[str, Made]
) -> None:
    for name in ("half.mp4", "half.mkv"):
        video = library[name]
        data = await probe_all(cases[name].path)
        claimed = float(data["format"]["duration"])  # ffprobe believes the header
        assert claimed == pytest.approx(4.0, abs=0.05), name
        assert video.truncated, name
        assert video.header_duration.ToNanoseconds() / 1e9 == pytest.approx(claimed, abs=0.05)
        plays = video.duration.ToNanoseconds() / 1e9
        assert 0.5 < plays < 3.0, (name, plays)  # half the bytes: about half the frames
        assert video.duration_source == scan_pb2.DURATION_SOURCE_PACKETS
    for name in ("whole.mp4", "whole.mkv"):
        assert not library[name].truncated, name
        assert not library[name].HasField("header_duration"), name


async def test_variable_frame_rate(
    library: dict[str, scan_pb2.Video], cases: dict[str, Made]
) -> None:
    vfr = library["vfr.mp4"]
    data = await probe_all(cases["vfr.mp4"].path)
    assert vfr.variable_frame_rate
    # The movie header's 2.924 s (ffprobe 5.1), not the 2.789 s of FFmpeg 8's sample durations.
    assert vfr.duration.ToNanoseconds() / 1e9 == pytest.approx(float(data["format"]["duration"]))
    assert vfr.duration.ToNanoseconds() / 1e9 > 2.89  # the last frame starts at 2.890 s
    for name in ("rot90.mp4", "whole.mkv", "live.webm", "raw.m2v", "interlaced.mkv"):
        assert not library[name].variable_frame_rate, name


async def test_a_file_past_every_cap_stays_bounded(library: dict[str, scan_pb2.Video]) -> None:
    video = library["past-the-caps.mkv"]
    assert (video.stream_count, len(video.streams)) == (41, probe_streams.MAX_STREAMS)
    assert (video.chapter_count, len(video.chapters)) == (100, probe_streams.MAX_CHAPTERS)
    assert all(len(c.title.encode()) <= probe_streams.MAX_TITLE_BYTES for c in video.chapters)
    assert video.metadata_cut
    assert not library["rot90.mp4"].metadata_cut


def test_the_largest_video_the_caps_allow_fits_its_bound() -> None:
    """Every list at its cap, every text at its bound, every number at its widest: under
    32 KiB beside the path, so a 2 MiB page holds at least 60 of the largest, and a prober's
    answer (the details in base64) stays under the 64 KiB line it may write."""
    wide = "\U0001f600" * 64  # 256 bytes of four-byte characters
    video = scan_pb2.Video(
        video_id="v_9223372036854775807",
        title=wide,
        encoder=wide,
        timecode=wide,
        pixel_format="yuva444p16le" * 2,
        sample_aspect_ratio="65535:65535",
        display_aspect_ratio="65535:65535",
        color_primaries="jedec-p22",
        color_transfer="arib-std-b67",
        color_space="chroma-derived-nc",
    )
    for index in range(probe_streams.MAX_STREAMS):
        video.streams.add(
            index=index,
            kind=scan_pb2.STREAM_KIND_AUDIO,
            codec="c" * probe_streams.MAX_NAME_BYTES,
            profile="x" * probe_streams.MAX_TITLE_BYTES,
            language="x" * probe_streams.MAX_NAME_BYTES,
            title="x" * probe_streams.MAX_TITLE_BYTES,
            default=True,
            forced=True,
            channels=64,
            channel_layout="l" * probe_streams.MAX_NAME_BYTES,
            sample_rate=2**31 - 1,
            width=2**31 - 1,
            height=2**31 - 1,
            frame_rate=1e9,
            bit_rate=2**63 - 1,
        )
    for _ in range(probe_streams.MAX_CHAPTERS):
        chapter = video.chapters.add(title="x" * probe_streams.MAX_TITLE_BYTES)
        chapter.start.FromNanoseconds(2**62)
        chapter.end.FromNanoseconds(2**62)
    assert video.ByteSize() < 32 * 1024, video.ByteSize()
    answer = {"ok": result_to_json(ProbeResult(**FIELDS, details=video.SerializeToString()))}
    assert len(json.dumps(answer)) < 64 * 1024  # asyncio's default line limit


#: A ProbeResult's plain fields, at their widest.
FIELDS: dict[str, Any] = {
    "container": "x" * 64,
    "duration_ns": 2**63 - 1,
    "bit_rate": 2**63 - 1,
    "video_codec": "x" * 64,
    "width": 2**31 - 1,
    "height": 2**31 - 1,
    "frame_rate": 1e9,
    "audio_codec": "x" * 64,
    "audio_channels": 64,
    "audio_sample_rate": 2**31 - 1,
    "audio_streams": 2**31 - 1,
}


def test_dolby_vision_and_hdr10_plus_detection_on_side_data_bytes() -> None:
    """What cannot be made here (`_media_cases.py`) is tested on the side data FFmpeg gives:
    an AVDOVIMetadata whose RPU header says profile 8.1 (vdr_rpu_profile 1, no enhancement
    layer residual), profile 5 (vdr_rpu_profile 0, full range) and 7 (12-bit with an
    enhancement layer); HDR10+ dynamic metadata; a Dolby Vision codec tag without side data."""

    def dovi(rpu_profile: int, full_range: int, vdr_bits: int, el: int, no_residual: int) -> bytes:
        header = bytearray(17)
        header[4], header[10], header[13], header[15], header[16] = (
            rpu_profile,
            full_range,
            vdr_bits,
            el,
            no_residual,
        )
        return struct.pack("<3Q", 24, 0, 0) + bytes(header)

    assert probe_picture.dolby_vision_profile(dovi(1, 0, 10, 0, 1)) == 8
    assert probe_picture.dolby_vision_profile(dovi(0, 1, 10, 0, 1)) == 5
    assert probe_picture.dolby_vision_profile(dovi(1, 0, 12, 1, 0)) == 7
    assert probe_picture.dolby_vision_profile(b"") == 0
    kind = probe_picture._kind
    pq = 16
    assert kind({"DOVI_METADATA": dovi(1, 0, 10, 0, 1)}, pq, "hvc1") == (
        scan_pb2.HDR_KIND_DOLBY_VISION,
        8,
    )
    assert kind({}, 2, "dvh1") == (scan_pb2.HDR_KIND_DOLBY_VISION, 0)
    assert kind({"DYNAMIC_HDR_PLUS": b"\0" * 64}, pq, "hvc1") == (scan_pb2.HDR_KIND_HDR10_PLUS, 0)
    assert kind({}, pq, "") == (scan_pb2.HDR_KIND_HDR10, 0)
    assert kind({}, 18, "") == (scan_pb2.HDR_KIND_HLG, 0)
    assert kind({}, 1, "avc1") == (scan_pb2.HDR_KIND_NONE, 0)
    assert probe_picture.light_level(struct.pack("<2I", 1000, 400)) == (1000, 400)
    mastering = struct.pack("<16i6i", *([1] * 16), 1, 10000, 10000000, 10000, 1, 1)
    assert probe_picture.mastering_luminance(mastering) == (1000.0, 0.0001)
    assert probe_picture.mastering_luminance(mastering[:-4] + b"\0\0\0\0") == (0.0, 0.0)


async def test_a_page_of_the_largest_videos_stops_at_2_mib(
    make_server: Any, connect: Any, tmp_path: Path
) -> None:
    """1,000 videos of 20 KiB each would make a 20 MiB page: ListVideos stops at 2 MiB and the
    token goes on from there, so every page fits a default client (4 MiB)."""
    details = scan_pb2.Video()
    for index in range(probe_streams.MAX_STREAMS):
        details.streams.add(index=index, codec="subrip", title="t" * probe_streams.MAX_TITLE_BYTES)
    for _ in range(probe_streams.MAX_CHAPTERS):
        details.chapters.add(title="c" * probe_streams.MAX_TITLE_BYTES)
    rows = [
        dataclasses.replace(row, details=details.SerializeToString()) for row in library_rows(300)
    ]
    db = tmp_path / "big.db"
    await store_videos(db, rows)
    stub = await connect((await make_server(db=db)).address)
    first = await stub.ListVideos(scan_pb2.ListVideosRequest(page_size=1000))
    assert first.ByteSize() <= 2 * 1032 * 1024 + 64 * 1024
    assert 50 < len(first.videos) < 300 and first.next_page_token
    seen = [v.path for v in first.videos]
    token = first.next_page_token
    while token:
        page = await stub.ListVideos(scan_pb2.ListVideosRequest(page_size=1000, page_token=token))
        assert page.ByteSize() <= 2 * 1032 * 1024 + 64 * 1024
        seen += [v.path for v in page.videos]
        token = page.next_page_token
    assert seen == sorted(row.path for row in rows)
    assert len(first.videos[0].streams) == probe_streams.MAX_STREAMS


def box(name: bytes, body: bytes) -> bytes:
    return struct.pack(">I4s", 8 + len(body), name) + body


def test_the_movie_header_reader_on_version_1_boxes_and_on_garbage(tmp_path: Path) -> None:
    """64-bit (version 1) movie and track headers, as long recordings have, are read like
    FFmpeg reads them (no encoder here writes them for short clips); malformed boxes give no
    header, never an error."""
    mvhd = box(b"mvhd", b"\x01\0\0\0" + bytes(16) + struct.pack(">IQ", 1000, 7_200_123))
    matrix = struct.pack(">9i", 0, 65536, 0, -65536, 0, 0, 0, 0, 1 << 30)  # -90 degrees
    tkhd = box(b"tkhd", b"\x01\0\0\x03" + bytes(48) + matrix + bytes(8))
    moov = box(b"moov", mvhd + box(b"trak", tkhd) + box(b"trak", box(b"tkhd", bytes(84))))
    path = tmp_path / "v1.mp4"
    path.write_bytes(box(b"ftyp", b"isom" + bytes(4)) + box(b"mdat", bytes(100)) + moov)
    fd = os.open(path, os.O_RDONLY)
    try:
        header = mp4_header.movie_header(fd, path.stat().st_size)
    finally:
        os.close(fd)
    assert header == mp4_header.MovieHeader(7_200_123_000_000, (-90, 0))
    for garbage in (
        b"",
        b"\xff" * 64,
        box(b"moov", b"\0\0\0\x01mvhd"),
        struct.pack(">I4s", 3, b"moov"),
    ):
        path.write_bytes(garbage)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert mp4_header.movie_header(fd, len(garbage)) == mp4_header.MovieHeader(0, ())
        finally:
            os.close(fd)
