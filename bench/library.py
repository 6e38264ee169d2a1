"""A large library that looks like a real one, for the benchmarks of a big library (9 list
videos, 10 library size, the 1,000,000-file rescan): rows written straight into the server's
store, no file probed per row.

What a probe stores comes from real probes: six small files made with Debian's ffmpeg, one per
kind of video a home library holds (a film with three audio tracks, four subtitle tracks and
twelve chapters; a series episode; a phone clip; a UHD HDR10 film; a screen recording with no
duration in its header; an old AVI), are probed once with the server's own `probe_file`. Each row
takes one of them (its `details`, codecs and container as probed) and a path, size, time,
duration, resolution, rotation, health and fingerprint of its own, drawn from a generator seeded
by the row's chunk, so that the same count always gives the same library:

- film (25%): mkv, h264, ac3 5.1 + 2 aac, 4 subtitles, 12 chapters; 480p 15%, 720p 20%,
  1080p 55%, 2160p 10%; 80 min to 3 h;
- series episode (45%): mkv, h264, aac, 1 subtitle, 6 chapters; 600 series; 720p or 1080p;
  20 to 60 min;
- phone clip (20%): mp4, h264, aac; rotation 90 for 25%, -90 for 2%, 180 for 1%; variable
  frame rate for 60%; 3 s to 5 min;
- UHD film (3%): mkv, hevc 10-bit HDR10, eac3, 2 subtitles, 8 chapters; 2160p; 90 min to 3 h;
- screen recording (4%): webm, vp8 + opus, its duration from the packets; variable frame
  rate; 10 s to 30 min;
- old film (3%): avi, mpeg4 + mp3; 480p or 576p; 80 min to 2 h.

Each kind has a folder of its own (Archive, Camera, Films, Films UHD, Recordings, Series), as a
library is arranged: in path order the videos of a kind come together. Besides, 10% of the
videos were verified OK, 0.5% have decode warnings (with messages), 0.1% are corrupt; 1 in
20,000 is truncated; every 200th video is a copy of the one before (same size and fingerprint,
another path: a duplicate). Every video has the same `probe_time` (one first
scan): the `probe_time` order is one tie of the whole library, broken by id.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mediascan.server.probe import probe_file
from mediascan.server.probed import ProbeResult
from mediascan.server.store import VideoRow
from mediascan.server.testing import store_videos
from mediascan.v1 import scan_pb2

from .common import Context

ROOT = "/media/library"
CHUNK = 100_000  # rows generated and written a transaction at a time
SERIES = 600
PROBE_NS = 1_700_000_000_000_000_000
JOB_ID = "j_01M8HSENJET22K5YPRFGZMC45C"
TRUNCATED_ONE_IN = 20_000
DUPLICATE_EVERY = 200

FFMPEG = ("ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-nostdin")
SOURCE = "testsrc=size=320x240:rate=25:duration=1"
SINE = "sine=frequency=440:duration=1"

_WORDS = (
    "Silent", "River", "Night", "Glass", "Iron", "Summer", "Winter", "Last", "First", "Hidden",
    "Broken", "Golden", "Distant", "Northern", "Little", "Long", "Dark", "Bright", "Wild",
    "Secret", "Empty", "Lost", "Red", "Blue", "Quiet", "Falling", "Burning",
)  # fmt: skip
_NOUNS = (
    "Road", "Garden", "House", "Harbour", "City", "Mountain", "Letter", "Island", "Station",
    "Kingdom", "Machine", "Shore", "Forest", "Bridge", "Signal", "Empire", "Witness", "Storm",
    "Voyage", "Circle", "Mirror", "Orchard", "Tower", "Valley",
)  # fmt: skip
_GROUPS = ("GRP", "NTb", "FLUX", "SPARKS", "AMIABLE", "ROVERS", "DIMENSION", "KOGi")


@dataclasses.dataclass(frozen=True)
class Kind:
    name: str
    share: float
    sizes: tuple[int, int]  #: bytes
    seconds: tuple[int, int]
    #: (width, height, weight)
    resolutions: tuple[tuple[int, int, float], ...]
    path: Callable[[int, random.Random, int], str]  #: (row number, generator, height)
    vfr_share: float = 0.0
    rotations: tuple[tuple[int, float], ...] = ()  #: (degrees, share)


def _title(i: int, rng: random.Random) -> tuple[str, int]:
    return f"The {rng.choice(_WORDS)} {rng.choice(_NOUNS)} {i}", rng.randrange(1950, 2025)


def _film_path(i: int, rng: random.Random, height: int) -> str:
    title, year = _title(i, rng)
    dots = title.replace(" ", ".")
    source = "BluRay" if height >= 720 else "DVDRip"
    return (
        f"{ROOT}/Films/{title} ({year})/{dots}.{year}.{height}p.{source}.x264-"
        f"{rng.choice(_GROUPS)}.mkv"
    )


def _episode_path(i: int, rng: random.Random, height: int) -> str:
    show = f"{_WORDS[i % SERIES % len(_WORDS)]} {_NOUNS[i % SERIES // len(_WORDS)]}"
    season, episode = rng.randrange(1, 9), rng.randrange(1, 25)
    name = f"{rng.choice(_WORDS)} {rng.choice(_NOUNS)}"
    return (
        f"{ROOT}/Series/{show}/Season {season:02d}/{show} - S{season:02d}E{episode:02d} - "
        f"{name} {i}.mkv"
    )


def _phone_path(i: int, rng: random.Random, height: int) -> str:
    year, month, day = rng.randrange(2012, 2025), rng.randrange(1, 13), rng.randrange(1, 29)
    clock = f"{rng.randrange(24):02d}{rng.randrange(60):02d}{rng.randrange(60):02d}"
    return f"{ROOT}/Camera/{year}/{year}-{month:02d}/VID_{year}{month:02d}{day:02d}_{clock}_{i}.mp4"


def _uhd_path(i: int, rng: random.Random, height: int) -> str:
    title, year = _title(i, rng)
    dots = title.replace(" ", ".")
    return (
        f"{ROOT}/Films UHD/{title} ({year})/{dots}.{year}.2160p.UHD.BluRay.HDR10.x265-"
        f"{rng.choice(_GROUPS)}.mkv"
    )


def _screen_path(i: int, rng: random.Random, height: int) -> str:
    year, month, day = rng.randrange(2019, 2025), rng.randrange(1, 13), rng.randrange(1, 29)
    clock = f"{rng.randrange(24):02d}.{rng.randrange(60):02d}.{rng.randrange(60):02d}"
    return f"{ROOT}/Recordings/Screen Recording {year}-{month:02d}-{day:02d} at {clock} {i}.webm"


def _avi_path(i: int, rng: random.Random, height: int) -> str:
    title, year = _title(i, rng)
    return f"{ROOT}/Archive/{title.replace(' ', '.')}.{year}.DVDRip.XviD-{rng.choice(_GROUPS)}.avi"


KINDS = (
    Kind(
        "film",
        0.25,
        (700_000_000, 12_000_000_000),
        (80 * 60, 180 * 60),
        ((720, 480, 0.15), (1280, 720, 0.20), (1920, 1080, 0.55), (3840, 2160, 0.10)),
        _film_path,
    ),
    Kind(
        "episode",
        0.45,
        (150_000_000, 2_500_000_000),
        (20 * 60, 60 * 60),
        ((1280, 720, 0.4), (1920, 1080, 0.6)),
        _episode_path,
    ),
    Kind(
        "phone",
        0.20,
        (2_000_000, 900_000_000),
        (3, 5 * 60),
        ((1920, 1080, 0.7), (3840, 2160, 0.2), (1280, 720, 0.1)),
        _phone_path,
        vfr_share=0.6,
        rotations=((90, 0.25), (-90, 0.02), (180, 0.01)),
    ),
    Kind(
        "uhd",
        0.03,
        (15_000_000_000, 70_000_000_000),
        (90 * 60, 180 * 60),
        ((3840, 2160, 1.0),),
        _uhd_path,
    ),
    Kind(
        "screen",
        0.04,
        (1_000_000, 2_000_000_000),
        (10, 30 * 60),
        ((1920, 1080, 0.6), (2560, 1440, 0.3), (1280, 720, 0.1)),
        _screen_path,
        vfr_share=1.0,
    ),
    Kind(
        "avi",
        0.03,
        (600_000_000, 1_400_000_000),
        (80 * 60, 120 * 60),
        ((640, 480, 0.6), (720, 576, 0.4)),
        _avi_path,
    ),
)


# -- the template files -------------------------------------------------------------------------


def _ffmpeg(*args: str | Path) -> None:
    subprocess.run([*FFMPEG, *map(str, args)], check=True, timeout=120)


def _chapters(path: Path, title: str, count: int) -> Path:
    lines = [";FFMETADATA1", f"title={title}"]
    for index in range(count):
        start = index * 80
        lines += ["[CHAPTER]", "TIMEBASE=1/1000", f"START={start}", f"END={start + 80}"]
        lines.append(f"title=Chapter {index + 1}")
    path.write_text("\n".join(lines) + "\n")
    return path


def _make_files(folder: Path) -> dict[str, Path]:
    """One small real file of each kind, made with ffmpeg."""
    folder.mkdir(parents=True, exist_ok=True)
    subs = folder / "subs.srt"
    subs.write_text("1\n00:00:00,000 --> 00:00:01,000\nHello\n")
    video = ("-f", "lavfi", "-i", SOURCE)
    audio = ("-f", "lavfi", "-i", SINE)
    made = {name: folder / f"{name}{suffix}" for name, suffix in _SUFFIXES.items()}
    languages = ("eng", "fre", "spa", "ger")
    _ffmpeg(
        *video, *audio, *audio, *audio,
        *(arg for _ in languages for arg in ("-i", str(subs))),
        "-i", _chapters(folder / "film.txt", "A Film", 12),
        "-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "3:a",
        *(arg for n in range(len(languages)) for arg in ("-map", str(4 + n))),
        "-map_chapters", "8", "-map_metadata", "8",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a:0", "ac3", "-ac:a:0", "6",
        "-c:a:1", "aac", "-c:a:2", "aac", "-c:s", "srt",
        "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=fre",
        "-metadata:s:a:2", "language=eng", "-metadata:s:a:2", "title=Commentary",
        *(a for n, la in enumerate(languages) for a in (f"-metadata:s:s:{n}", f"language={la}")),
        "-disposition:s:3", "forced",
        made["film"],
    )  # fmt: skip
    _ffmpeg(
        *video, *audio, "-i", subs, "-i", _chapters(folder / "episode.txt", "An Episode", 6),
        "-map", "0:v", "-map", "1:a", "-map", "2", "-map_chapters", "3", "-map_metadata", "3",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-c:s", "srt",
        "-metadata:s:a:0", "language=eng", "-metadata:s:s:0", "language=eng",
        made["episode"],
    )  # fmt: skip
    _ffmpeg(
        *video, *audio, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac",
        "-metadata", "creation_time=2023-05-06T12:34:56Z", made["phone"],
    )  # fmt: skip
    _ffmpeg(
        *video, *audio, "-i", subs, "-i", subs,
        "-i", _chapters(folder / "uhd.txt", "A UHD Film", 8),
        "-map", "0:v", "-map", "1:a", "-map", "2", "-map", "3", "-map_chapters", "4",
        "-map_metadata", "4", "-c:v", "libx265", "-pix_fmt", "yuv420p10le",
        "-x265-params", _HDR10, "-color_primaries", "bt2020", "-color_trc", "smpte2084",
        "-colorspace", "bt2020nc", "-c:a", "eac3", "-c:s", "srt",
        "-metadata:s:a:0", "language=eng", "-metadata:s:s:0", "language=eng",
        "-metadata:s:s:1", "language=fre",
        made["uhd"],
    )  # fmt: skip
    with made["screen"].open("wb") as sink:  # a recorder writing to a pipe: no duration
        subprocess.run(
            [*FFMPEG, *video, *audio, "-c:v", "libvpx", "-c:a", "libopus", "-f", "webm", "pipe:1"],
            check=True,
            stdout=sink,
            timeout=120,
        )
    _ffmpeg(
        *video, *audio, "-c:v", "mpeg4", "-vtag", "XVID", "-c:a", "libmp3lame", made["avi"]
    )  # fmt: skip
    return made


_SUFFIXES = {
    "film": ".mkv",
    "episode": ".mkv",
    "phone": ".mp4",
    "uhd": ".mkv",
    "screen": ".webm",
    "avi": ".avi",
}
_HDR10 = (
    "log-level=error:hdr10=1:colorprim=bt2020:transfer=smpte2084:colormatrix=bt2020nc:"
    "master-display=G(13250,34500)B(7500,3000)R(34000,16000)WP(15635,16450)L(10000000,1):"
    "max-cll=1000,400"
)


def templates(folder: Path) -> dict[str, ProbeResult]:
    """What the server's prober reads in one real file of each kind (made in `folder`)."""
    return {name: probe_file(str(path)) for name, path in _make_files(folder).items()}


# -- the rows -----------------------------------------------------------------------------------


class _Details:
    """The `details` of a template with the picture of one row (its size and rotation), made
    once per combination."""

    def __init__(self, made: dict[str, ProbeResult]) -> None:
        self._made = made
        self._cache: dict[tuple[str, int, int, int], bytes] = {}

    def get(self, kind: str, width: int, height: int, rotation: int) -> bytes:
        key = (kind, width, height, rotation)
        found = self._cache.get(key)
        if found is None:
            video = scan_pb2.Video.FromString(self._made[kind].details)
            turned = rotation in (90, -90)
            video.display_width, video.display_height = (
                (height, width) if turned else (width, height)
            )
            for stream in video.streams:
                if stream.index == video.video_stream_index:
                    stream.width, stream.height = width, height
            found = self._cache[key] = video.SerializeToString()
        return found


def realistic_rows(
    count: int,
    made: dict[str, ProbeResult],
    *,
    start: int = 0,
    files: Callable[[int], tuple[str, int, int, int]] | None = None,
) -> list[VideoRow]:
    """Rows `start` to `start + count` of the library (see the module's docstring), from the
    templates `made`. `files(i)`: (path, size, mtime_ns, dev) of row i, for rows that stand for
    real files (the rescan's placeholders); by default a made-up path on device 0."""
    rng = random.Random(f"mediascan-library-{start}")
    details = _Details(made)
    cumulative = []
    total = 0.0
    for kind in KINDS:
        total += kind.share
        cumulative.append((total, kind))
    rows: list[VideoRow] = []
    for i in range(start, start + count):
        if i % DUPLICATE_EVERY == DUPLICATE_EVERY - 1 and rows:
            rows.append(_copy(rows[-1], i, files))
            continue
        draw = rng.random()
        kind = next((k for limit, k in cumulative if draw < limit), KINDS[-1])
        rows.append(_row(i, kind, made[kind.name], rng, details, files))
    return rows


def _row(
    i: int,
    kind: Kind,
    probed: ProbeResult,
    rng: random.Random,
    details: _Details,
    files: Callable[[int], tuple[str, int, int, int]] | None,
) -> VideoRow:
    width, height, _ = rng.choices(kind.resolutions, [w for *_, w in kind.resolutions])[0]
    rotation = 0
    draw = rng.random()
    for degrees, share in kind.rotations:
        if draw < share:
            rotation = degrees
            break
        draw -= share
    seconds = rng.uniform(*kind.seconds)
    size = rng.randrange(*kind.sizes)
    truncated = rng.randrange(TRUNCATED_ONE_IN) == 0
    duration_source = probed.duration_source
    if truncated:
        seconds *= rng.uniform(0.1, 0.9)
        duration_source = scan_pb2.DURATION_SOURCE_PACKETS
    path = kind.path(i, rng, height)
    mtime_ns = 1_500_000_000_000_000_000 + i * 271_000_000_003
    dev = 0
    if files is not None:
        path, size, mtime_ns, dev = files(i)
    health = _health(rng)
    return VideoRow(
        **{
            **_probed_fields(probed),
            "duration_ns": int(seconds * 1e9),
            "bit_rate": int(size * 8 / seconds),
            "width": width,
            "height": height,
            "duration_source": duration_source,
            "truncated": truncated,
            "variable_frame_rate": rng.random() < kind.vfr_share,
            "rotation": rotation,
            "details": details.get(kind.name, width, height, rotation),
            "fingerprint": f"{size}-{rng.getrandbits(128):032x}",
        },
        path=path,
        size_bytes=size,
        mtime_ns=mtime_ns,
        probe_ns=PROBE_NS,
        job_id=JOB_ID,
        dev=dev,
        **health,
    )


def _probed_fields(probed: ProbeResult) -> dict[str, Any]:
    return {f.name: getattr(probed, f.name) for f in dataclasses.fields(ProbeResult)}


def _health(rng: random.Random) -> dict[str, Any]:
    draw = rng.random()
    verified = PROBE_NS + 86_400 * 10**9
    if draw < 0.10:
        return {"health": scan_pb2.HEALTH_OK, "verify_ns": verified}
    if draw < 0.105:
        at = rng.randrange(10**12)
        messages = [
            f"[h264 @ 0x55d0c8] error while decoding MB 42 17, bytestream -{rng.randrange(99)}",
            "[h264 @ 0x55d0c8] concealing 1520 DC, 1520 AC, 1520 MV errors in P frame",
        ]
        return {
            "health": scan_pb2.HEALTH_WARNINGS,
            "health_errors": rng.randrange(1, 40),
            "health_messages": json.dumps(messages),
            "health_first_error_ns": at,
            "verify_ns": verified,
        }
    if draw < 0.106:
        return {
            "health": scan_pb2.HEALTH_CORRUPT,
            "health_errors": 1,
            "health_messages": json.dumps(["Invalid data found when processing input"]),
            "health_first_error_ns": rng.randrange(10**12),
            "verify_ns": verified,
        }
    return {}


def _copy(
    row: VideoRow, i: int, files: Callable[[int], tuple[str, int, int, int]] | None
) -> VideoRow:
    """A copy of `row` elsewhere: same size and fingerprint (a duplicate)."""
    stem, dot, suffix = row.path.rpartition(".")
    path, size, mtime_ns, dev = f"{stem} (copy {i}){dot}{suffix}", row.size_bytes, row.mtime_ns, 0
    if files is not None:
        path, size, mtime_ns, dev = files(i)
    return dataclasses.replace(row, path=path, size_bytes=size, mtime_ns=mtime_ns, dev=dev)


async def write_library(
    ctx: Context,
    db: Path | str,
    count: int,
    files: Callable[[int], tuple[str, int, int, int]] | None = None,
) -> None:
    """`count` rows of the library written into `db` (a SQLite file or a PostgreSQL URL) with
    the server's store, CHUNK a transaction, in path order: as a first scan writes a library,
    folder after folder, so that the rows of a folder lie together in the table. (Written in
    the order they are drawn, the rows of a folder would be spread over the whole table, and a
    read along the path index would fetch a table page for nearly every row.) With `files`, the
    paths are those of the files, in order already."""
    made = await template_results(ctx)
    if files is not None:
        for start in range(0, count, CHUNK):
            rows = realistic_rows(min(CHUNK, count - start), made, start=start, files=files)
            await store_videos(db, rows)
        return
    every: list[VideoRow] = []
    for start in range(0, count, CHUNK):
        every += realistic_rows(min(CHUNK, count - start), made, start=start)
    every.sort(key=_path)
    for start in range(0, count, CHUNK):
        await store_videos(db, every[start : start + CHUNK])


def _path(row: VideoRow) -> str:
    return row.path


async def template_results(ctx: Context) -> dict[str, ProbeResult]:
    """The probed templates, made once per run."""
    made = ctx.cache.get("library-templates")
    if made is None:
        made = await asyncio.to_thread(templates, ctx.scratch / "library-templates")
        ctx.cache["library-templates"] = made
    return dict(made)


async def library_db(ctx: Context) -> Path:
    """A SQLite database holding `list_rows` videos of the library, written once per run and
    shared by the benchmarks that only read it (start a server on it; do not write to it)."""
    db = ctx.cache.get("library-db")
    if db is None:
        count = ctx.sizes.list_rows
        db = ctx.fresh("library") / "mediascan.db"
        await write_library(ctx, db, count)
        ctx.log(f"library: {count:,} videos in {db}")
        ctx.cache["library-db"] = db
    assert isinstance(db, Path)
    return db
