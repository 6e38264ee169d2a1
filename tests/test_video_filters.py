"""ListVideos filters and orders (issue 14, section 5): container, audio codec, width and
height bounds, rotation, hdr, health, truncated and variable frame rate; `order_by` path,
duration, size_bytes, modify_time and probe_time, each ascending or descending, in keyset pages
that concatenate to exactly the ordered, filtered library (ties broken by id: the order in
which the videos entered the library), with tokens bound to their order and filters. The rows
are written straight into the store, on both backends."""

from __future__ import annotations

import base64
import contextlib
import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import psycopg
import pytest

from mediascan.server.store import VideoQuery, VideoRow
from mediascan.server.store.sqlite.schema import ORDERED_COLUMNS, SCHEMA_VERSION
from mediascan.server.store.videos import VIDEO_COLUMNS, sqlite_page_parts, video_page_sql
from mediascan.server.testing import duration, field_violations, store_videos
from mediascan.v1 import scan_pb2

pytestmark = pytest.mark.both_backends

ROOT = "/media/filters"
COUNT = 120
SIZES = ((640, 480), (1280, 720), (1920, 1080), (3840, 2160))
CONTAINERS = ("matroska,webm", "mov,mp4,m4a,3gp,3g2,mj2", "avi")
#: order_by -> the VideoRow field it sorts by.
ORDERS = {
    "path": "path",
    "duration": "duration_ns",
    "size_bytes": "size_bytes",
    "modify_time": "mtime_ns",
    "probe_time": "probe_ns",
}


def make_rows() -> list[VideoRow]:
    """COUNT videos whose fields vary independently of their paths, with many ties on every
    sort key (so that pages must break them by id: written into a new library in this order,
    ROWS[i] gets the id i + 1)."""
    rows = []
    for i in range(COUNT):
        width, height = SIZES[i % 4]
        rows.append(
            VideoRow(
                # 53 is prime to COUNT: the names are a permutation, unrelated to i.
                path=f"{ROOT}/d{(i * 37) % 11}/v{(i * 53) % COUNT:03d}.mkv",
                size_bytes=1000 + i % 13,
                mtime_ns=-5_000_000_000 + (i % 17) * 1_000_000_000,  # some before 1970
                container=CONTAINERS[i % 3],
                duration_ns=(i % 10) * 1_000_000_000,
                bit_rate=1_000_000,
                video_codec=("h264", "hevc")[i % 2],
                width=width,
                height=height,
                frame_rate=25.0,
                audio_codec=("aac", "opus", "")[i % 3 if i % 5 else 2],
                audio_channels=2,
                audio_sample_rate=48000,
                audio_streams=1,
                probe_ns=1_700_000_000_000_000_000 + (i % 4),
                job_id="j_01M8HSENJET22K5YPRFGZMC45C",
                dev=0,
                rotation=(0, 90, -90, 180)[i % 4 if i % 3 else 0],
                hdr=(1, 2, 4, 1, 0)[i % 5],
                truncated=i % 6 == 0,
                variable_frame_rate=i % 7 == 0,
                health=(0, 1, 2, 3)[i % 4 if i % 2 else 0],
            )
        )
    return rows


ROWS = make_rows()


@pytest.fixture
async def stub(database: Path | str, make_server: Any, connect: Any) -> Any:
    """A server on a library of ROWS, written straight into its store."""
    await store_videos(database, ROWS)
    server = await make_server()
    return await connect(server.address)


async def listing(stub: Any, page_size: int, **fields: Any) -> list[str]:
    """The paths of every page of a listing, checking that each page but the last is full."""
    paths: list[str] = []
    token = ""
    while True:
        page = await stub.ListVideos(
            scan_pb2.ListVideosRequest(page_size=page_size, page_token=token, **fields)
        )
        paths += [v.path for v in page.videos]
        token = page.next_page_token
        if not token:
            return paths
        assert len(page.videos) == page_size


def expected(
    keep: Callable[[VideoRow], bool] = lambda row: True, order: str = "path", desc: bool = False
) -> list[str]:
    field = ORDERS[order]
    rows = [(index, row) for index, row in enumerate(ROWS) if keep(row)]  # ROWS[i]: id i + 1
    rows.sort(key=lambda item: (getattr(item[1], field), item[0]), reverse=desc)
    return [row.path for _, row in rows]


FILTERS: list[tuple[dict[str, Any], Callable[[VideoRow], bool]]] = [
    ({"container": "avi"}, lambda r: r.container == "avi"),
    ({"container": "mov,mp4,m4a,3gp,3g2,mj2"}, lambda r: r.container.startswith("mov")),
    ({"container": "mov"}, lambda r: False),  # the whole name, not a part
    ({"audio_codec": "opus"}, lambda r: r.audio_codec == "opus"),
    ({"min_width": 1280}, lambda r: r.width >= 1280),
    ({"max_width": 1280}, lambda r: r.width <= 1280),
    ({"min_height": 720, "max_height": 1080}, lambda r: 720 <= r.height <= 1080),
    ({"min_width": 1920, "max_width": 1920}, lambda r: r.width == 1920),
    ({"rotation": 0}, lambda r: r.rotation == 0),
    ({"rotation": 90}, lambda r: r.rotation == 90),
    ({"rotation": -90}, lambda r: r.rotation == -90),
    ({"rotation": 180}, lambda r: r.rotation == 180),
    ({"hdr": scan_pb2.HDR_KIND_NONE}, lambda r: r.hdr == 1),
    ({"hdr": scan_pb2.HDR_KIND_HLG}, lambda r: r.hdr == 4),
    ({"health": scan_pb2.HEALTH_CORRUPT}, lambda r: r.health == 3),
    ({"truncated": True}, lambda r: r.truncated),
    ({"truncated": False}, lambda r: not r.truncated),
    ({"variable_frame_rate": True}, lambda r: r.variable_frame_rate),
    ({"variable_frame_rate": False}, lambda r: not r.variable_frame_rate),
    (
        {
            "audio_codec": "aac",
            "min_height": 720,
            "truncated": False,
            "min_duration": duration(2),
            "video_codec": "hevc",
        },
        lambda r: (
            r.audio_codec == "aac"
            and r.height >= 720
            and not r.truncated
            and r.duration_ns >= 2_000_000_000
            and r.video_codec == "hevc"
        ),
    ),
    (
        {"path_prefix": f"{ROOT}/d1", "hdr": scan_pb2.HDR_KIND_HDR10, "max_width": 1920},
        lambda r: r.path.startswith(f"{ROOT}/d1/") and r.hdr == 2 and r.width <= 1920,
    ),
]


async def test_each_filter_lists_exactly_its_videos(stub: Any) -> None:
    for fields, keep in FILTERS:
        want = expected(keep)
        assert await listing(stub, 1000, **fields) == want, fields
        assert await listing(stub, 4, **fields) == want, fields
    assert all(len(expected(keep)) < COUNT for _, keep in FILTERS)
    assert all(expected(keep) for fields, keep in FILTERS if fields != {"container": "mov"})


@pytest.mark.parametrize("order", list(ORDERS))
async def test_each_order_pages_through_every_video_once_both_ways(stub: Any, order: str) -> None:
    for desc in (False, True):
        order_by = order + (" desc" if desc else "")
        want = expected(order=order, desc=desc)
        assert len(want) == COUNT
        for page_size in (1, 7, 1000):
            got = await listing(stub, page_size, order_by=order_by)
            assert got == want, (order_by, page_size)
        # Filtered too, and with the direction spelled out or in capitals.
        fields = {"audio_codec": "aac", "min_height": 720}
        keep = lambda r: r.audio_codec == "aac" and r.height >= 720  # noqa: E731
        spelled = f"{order} {'DESC' if desc else 'asc'}"
        assert await listing(stub, 5, order_by=spelled, **fields) == expected(keep, order, desc)


async def test_the_videos_carry_the_values_they_are_ordered_by(stub: Any) -> None:
    everything = await stub.ListVideos(scan_pb2.ListVideosRequest(order_by="path", page_size=COUNT))
    ids = {video.path: video.video_id for video in everything.videos}
    assert ids == {row.path: f"v_{index + 1}" for index, row in enumerate(ROWS)}
    page = await stub.ListVideos(
        scan_pb2.ListVideosRequest(order_by="modify_time desc", page_size=COUNT)
    )
    times = [v.modify_time.ToNanoseconds() for v in page.videos]
    assert times == sorted(times, reverse=True) and times[-1] < 0
    first = page.videos[0]
    row = next(r for r in ROWS if r.path == first.path)
    assert (first.rotation, first.hdr, first.truncated) == (row.rotation, row.hdr, row.truncated)


async def test_a_token_is_bound_to_its_order(stub: Any) -> None:
    first = await stub.ListVideos(scan_pb2.ListVideosRequest(order_by="duration", page_size=3))
    token = first.next_page_token
    for order_by in ("", "path", "duration desc", "size_bytes", "probe_time desc"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListVideos(scan_pb2.ListVideosRequest(order_by=order_by, page_token=token))
        expect_invalid(info, "page_token")
        assert "order" in info.value.details()
    # "duration asc" is "duration".
    rest = await stub.ListVideos(
        scan_pb2.ListVideosRequest(order_by="duration asc", page_token=token, page_size=1000)
    )
    paths = [v.path for v in first.videos] + [v.path for v in rest.videos]
    assert paths == expected(order="duration")
    # A path-order token is not one of another order either.
    by_path = await stub.ListVideos(scan_pb2.ListVideosRequest(page_size=3))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListVideos(
            scan_pb2.ListVideosRequest(order_by="path desc", page_token=by_path.next_page_token)
        )
    expect_invalid(info, "page_token")


@pytest.mark.parametrize(
    "fields",
    [
        {"container": "avi"},
        {"audio_codec": "aac"},
        {"min_width": 640},
        {"max_height": 2160},
        {"rotation": 0},
        {"hdr": scan_pb2.HDR_KIND_NONE},
        {"truncated": False},
        {"variable_frame_rate": False},
    ],
    ids=lambda fields: next(iter(fields)),
)
async def test_a_token_is_bound_to_the_new_filters(stub: Any, fields: dict[str, Any]) -> None:
    for order_by in ("", "size_bytes desc"):
        first = await stub.ListVideos(
            scan_pb2.ListVideosRequest(order_by=order_by, page_size=2, **fields)
        )
        token = first.next_page_token
        assert token
        with pytest.raises(grpc.aio.AioRpcError) as info:  # the filter dropped
            await stub.ListVideos(scan_pb2.ListVideosRequest(order_by=order_by, page_token=token))
        expect_invalid(info, "page_token")
        unfiltered = await stub.ListVideos(
            scan_pb2.ListVideosRequest(order_by=order_by, page_size=2)
        )
        with pytest.raises(grpc.aio.AioRpcError) as info:  # the filter added
            await stub.ListVideos(
                scan_pb2.ListVideosRequest(
                    order_by=order_by, page_token=unfiltered.next_page_token, **fields
                )
            )
        expect_invalid(info, "page_token")


@pytest.mark.parametrize(
    ("fields", "field", "says"),
    [
        ({"order_by": "length"}, "order_by", "duration"),
        ({"order_by": "duration sideways"}, "order_by", "desc"),
        ({"order_by": "duration desc path"}, "order_by", "desc"),
        ({"order_by": "Duration"}, "order_by", "duration"),
        ({"min_width": 1920, "max_width": 1280}, "min_width", "max_width"),
        ({"min_height": 1081, "max_height": 1080}, "min_height", "max_height"),
        ({"min_duration": duration(5), "max_duration": duration(4)}, "min_duration", "max_"),
        ({"min_width": -1}, "min_width", "0 for no bound"),
        ({"max_height": -720}, "max_height", "0 for no bound"),
        ({"rotation": 45}, "rotation", "-90"),
        ({"rotation": 270}, "rotation", "270 is -90"),
        ({"hdr": 99}, "hdr", "HDR_KIND_HDR10"),
        ({"health": 7}, "health", "HEALTH_OK"),
        ({"container": "avi\x00"}, "container", "NUL"),
        ({"audio_codec": "a" * 300}, "audio_codec", "longer"),
    ],
)
async def test_bad_values_name_the_field_and_the_fix(
    stub: Any, fields: dict[str, Any], field: str, says: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListVideos(scan_pb2.ListVideosRequest(**fields))
    expect_invalid(info, field)
    assert says in info.value.details(), info.value.details()


async def test_old_tokens_of_the_path_order_still_work(stub: Any) -> None:
    """A token of a path-ordered listing with none of the new filters is what it was before
    they came (`{"p": path, "f": digest}`): one issued by the previous server continues."""
    first = await stub.ListVideos(scan_pb2.ListVideosRequest(page_size=5))
    token = first.next_page_token
    data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    assert set(data) == {"p", "f"}


def expect_invalid(info: pytest.ExceptionInfo[grpc.aio.AioRpcError], field: str) -> None:
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert field in field_violations(info.value), info.value.details()


@pytest.mark.parametrize("order", [o for o in ORDERS if o != "path"])
async def test_every_order_is_a_range_of_an_index(
    stub: Any, database: Path | str, order: str
) -> None:
    """A page of any order, first or deep, is a range of the index of (key, id) read in
    either direction: no sort, no OFFSET. (PostgreSQL would scan a table this small whole:
    sequential scans and sorts are turned off to ask whether the index can serve the order.)"""
    column = ORDERS[order]
    for descending in (False, True):
        for after in (None, (0, 1)):  # the first page, a later one
            query = VideoQuery(order=order, descending=descending, after=after)
            plan = await query_plan(database, query)
            assert f"videos_by_{column}" in plan, plan
            assert "TEMP B-TREE" not in plan and "Sort" not in plan, plan
            if after is not None and isinstance(database, Path):
                # The ties of the last key are a range of the ids, not all of them.
                than = "<" if descending else ">"
                assert f"({column}=? AND id{than}?)" in plan, plan
    assert column in ORDERED_COLUMNS


async def query_plan(database: Path | str, query: VideoQuery) -> str:
    """How the database would run the ListVideos query of `query`."""
    if isinstance(database, Path):
        plans = []
        with contextlib.closing(sqlite3.connect(database)) as conn:
            for page, params in sqlite_page_parts(query):
                sql = f"EXPLAIN QUERY PLAN SELECT id, {VIDEO_COLUMNS} FROM videos{page}"
                plans += [str(step[-1]) for step in conn.execute(sql, params)]
        return " ".join(plans)
    page, params = video_page_sql(query, "%s")
    async with await psycopg.AsyncConnection.connect(database) as pg:
        await pg.execute("SET enable_seqscan = off")
        await pg.execute("SET enable_sort = off")
        sql = f"EXPLAIN SELECT id FROM videos{page}"
        return " ".join(str(row[0]) for row in await (await pg.execute(sql, params)).fetchall())


async def test_a_version_6_library_gets_the_indexes_and_keeps_its_videos(
    database: Path | str, make_server: Any, connect: Any
) -> None:
    if not isinstance(database, Path):
        pytest.skip("the SQLite migration (PostgreSQL's is test_postgres_store's)")
    await store_videos(database, ROWS[:10])
    conn = sqlite3.connect(database)
    for column in ORDERED_COLUMNS:
        conn.execute(f"DROP INDEX videos_by_{column}")
    conn.execute("UPDATE meta SET value = '6' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    stub = await connect((await make_server()).address)
    assert await listing(stub, 3, order_by="size_bytes desc") == expected(
        lambda r: r in ROWS[:10], "size_bytes", True
    )
    conn = sqlite3.connect(database)
    try:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    finally:
        conn.close()
    assert {f"videos_by_{c}" for c in ORDERED_COLUMNS} <= names
    assert version == (str(SCHEMA_VERSION),)


def test_rows_differ_in_every_filtered_field() -> None:
    for field in ("container", "audio_codec", "width", "rotation", "hdr", "health"):
        assert len({getattr(row, field) for row in ROWS}) > 2, field
    assert len({row.path for row in ROWS}) == COUNT


@pytest.mark.parametrize(
    "change",
    [
        {"k": "abc"},
        {"k": 2**70},
        {"i": 0},
        {"i": None},
        {"o": "duration; DROP TABLE videos"},
        {"o": ["duration"]},
        {"f": None, "o": None},
    ],
    ids=["key-text", "key-huge", "id-zero", "id-null", "order-junk", "order-list", "nulls"],
)
async def test_a_forged_token_of_an_order_is_refused(stub: Any, change: dict[str, Any]) -> None:
    first = await stub.ListVideos(scan_pb2.ListVideosRequest(order_by="duration", page_size=3))
    token = first.next_page_token
    data = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
    assert set(data) == {"k", "i", "f", "o"}
    forged = base64.urlsafe_b64encode(json.dumps({**data, **change}).encode()).decode()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListVideos(scan_pb2.ListVideosRequest(order_by="duration", page_token=forged))
    expect_invalid(info, "page_token")
