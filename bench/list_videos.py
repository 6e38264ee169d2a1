"""9. ListVideos on a large library (`library.py`: rows written straight into the server's
database, no file probed): for each `order_by`, the first page and a page 90% deep, and for each
filter, its first page (path order), 100 videos each; latency p50 and p99 over real gRPC calls,
against the same query run bare on a SQLite connection to the same file (no server, no
protobuf). Keyset pages on an index of each sort key: a deep page should cost what the first
does. A filter the indexes do not serve is read along the path index until the page is full: the
rarer its videos, the more rows a page reads (the note of each filter says how many match).
"""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import duration_pb2

from mediascan.server.engine.tokens import decode_videos_token, encode_videos_token
from mediascan.server.store import VIDEO_ORDERS, VideoQuery
from mediascan.server.store.videos import VIDEO_COLUMNS, sqlite_page_parts, video_page_sql
from mediascan.server.video_filters import filter_key, video_query
from mediascan.v1 import scan_pb2, scan_pb2_grpc

from .common import CHANNEL_OPTIONS, Context, Row, mediascan_server, percentile
from .library import library_db

BENCH = "9 list videos"
PAGE = 100
DEEP = 0.9  # where the deep page starts, as a share of the library
#: A filter's calls stop after this many seconds (at least FILTER_CALLS_MIN calls): a filter
#: that reads much of the library takes far longer a call than a page of an order.
FILTER_SECONDS = 5.0
FILTER_CALLS_MIN = 5

#: Each filter with the value a user would ask for (first page, path order). `SERIES` and
#: `DUPLICATE` are replaced by one series' folder and one duplicated file's fingerprint, found in
#: the library.
SERIES, DUPLICATE = "SERIES", "DUPLICATE"
FILTERS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("path_prefix=<one series' folder>", {"path_prefix": SERIES}),
    ("video_codec=hevc", {"video_codec": "hevc"}),
    ("container=avi", {"container": "avi"}),
    ("audio_codec=opus", {"audio_codec": "opus"}),
    ("min_duration=2h", {"min_duration": duration_pb2.Duration(seconds=7200)}),
    ("max_duration=30s", {"max_duration": duration_pb2.Duration(seconds=30)}),
    ("min_width=3840", {"min_width": 3840}),
    ("max_width=720", {"max_width": 720}),
    ("min_height=2160", {"min_height": 2160}),
    ("max_height=480", {"max_height": 480}),
    ("rotation=90", {"rotation": 90}),
    ("hdr=HDR10", {"hdr": scan_pb2.HDR_KIND_HDR10}),
    ("health=CORRUPT", {"health": scan_pb2.HEALTH_CORRUPT}),
    ("truncated=true", {"truncated": True}),
    ("variable_frame_rate=true", {"variable_frame_rate": True}),
    ("fingerprint=<a duplicated file's>", {"fingerprint": DUPLICATE}),
)


def _orders() -> list[str]:
    return [f"{order}{way}" for order in VIDEO_ORDERS for way in ("", " desc")]


def figures(sizes: Any) -> list[str]:
    orders = [
        f"{page} page by {order}, ms {stat}"
        for order in _orders()
        for page in ("first", "deep")
        for stat in ("p50", "p99")
    ]
    return orders + [_filter_figure(label) for label, _ in FILTERS]


def _filter_figure(label: str) -> str:
    return f"first page with {label}, ms p50"


async def run(ctx: Context) -> list[Row]:
    count, calls = ctx.sizes.list_rows, ctx.sizes.list_calls
    db = await library_db(ctx)
    server, _ = mediascan_server(ctx, "list-videos", "--db", str(db))
    rows: list[Row] = []
    try:
        async with grpc.aio.insecure_channel(server.address, options=CHANNEL_OPTIONS) as channel:
            stub = scan_pb2_grpc.ScanServiceStub(channel)
            for order_by in _orders():
                for page, token in (("first", ""), ("deep", _deep_token(db, order_by, count))):
                    served = await _served(stub, order_by, token, calls)
                    bare = _bare(db, order_by, token, calls)
                    rows += _rows(f"{page} page by {order_by}", served, bare)
                    ctx.log(f"{BENCH}: {page} page by {order_by}: {rows[-2].value:.2f} ms p50")
            values = _found_values(db)
            for label, fields in FILTERS:
                found = {
                    k: values[v] for k, v in fields.items() if isinstance(v, str) and v in values
                }
                request = scan_pb2.ListVideosRequest(page_size=PAGE, **{**fields, **found})
                rows.append(await _filter_row(stub, db, label, request, calls, count))
                ctx.log(f"{BENCH}: first page with {label}: {rows[-1].value:.2f} ms p50")
    finally:
        await asyncio.to_thread(server.stop)
    rows[0].note = f"each figure: {calls} calls of {PAGE} videos, {count:,} in the library"
    return rows


def _query(order_by: str) -> VideoQuery:
    order, _, way = order_by.partition(" ")
    return VideoQuery(order=order, descending=way == "desc", limit=PAGE)


def _deep_token(db: Path, order_by: str, count: int) -> str:
    """The token of the page that starts DEEP into the library in `order_by` (found here with
    an OFFSET, once: the bench's setup, not what it measures)."""
    query = _query(order_by)
    page, params = video_page_sql(query, "?")
    column = VIDEO_ORDERS[query.order]
    sql = f"SELECT {column}, id, path FROM videos{page.replace('LIMIT ?', 'LIMIT 1 OFFSET ?')}"
    with sqlite3.connect(db) as conn:
        key, video_id, path = conn.execute(sql, [*params[:-1], int(count * DEEP)]).fetchone()
    last: str | tuple[int, int] = path if column == "path" else (key, video_id)
    return encode_videos_token(last, filter_key(query), order_by)


async def _served(stub: Any, order_by: str, token: str, calls: int) -> list[float]:
    request = scan_pb2.ListVideosRequest(order_by=order_by, page_token=token, page_size=PAGE)
    await stub.ListVideos(request)  # warm
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        response = await stub.ListVideos(request)
        samples.append((time.perf_counter() - started) * 1000)
        if len(response.videos) != PAGE:
            raise RuntimeError(f"{order_by}: a page of {len(response.videos)} videos")
    return samples


def _bare(db: Path, order_by: str, token: str, calls: int) -> list[float]:
    """The same page read by a bare query on the same indexes (its start from the token)."""
    query = _query(order_by)
    after = decode_videos_token(token, filter_key(query), order_by)
    parts = sqlite_page_parts(dataclasses.replace(query, after=after))

    def page() -> None:
        got = 0
        for part, params in parts:
            sql = f"SELECT id, {VIDEO_COLUMNS} FROM videos{part}"
            got += len(conn.execute(sql, [*params[:-1], PAGE - got]).fetchall())
            if got >= PAGE:
                return

    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        page()  # warm
        return _timed(page, calls)


def _timed(call: Callable[[], object], calls: int) -> list[float]:
    samples = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        samples.append((time.perf_counter() - started) * 1000)
    return samples


def _rows(name: str, served: list[float], bare: list[float]) -> list[Row]:
    return [
        Row(
            bench=BENCH,
            figure=f"{name}, ms {stat}",
            value=percentile(served, q),
            baseline=percentile(bare, q),
            baseline_name="the same query on SQLite, bare",
            unit="ms",
            runs=[{"value": percentile(served, q), "baseline": percentile(bare, q)}],
        )
        for stat, q in (("p50", 50), ("p99", 99))
    ]


# -- filters ------------------------------------------------------------------------------------


def _found_values(db: Path) -> dict[str, str]:
    """One series' folder and one duplicated file's fingerprint, found in the library."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (path,) = conn.execute(
            "SELECT path FROM videos WHERE path > '/media/library/Series/' ORDER BY path LIMIT 1"
        ).fetchone()
        (fingerprint,) = conn.execute(
            "SELECT fingerprint FROM videos WHERE fingerprint != '' "
            "GROUP BY fingerprint HAVING count(*) > 1 LIMIT 1"
        ).fetchone()
    series = "/".join(path.split("/")[:5])  # /media/library/Series/NAME
    return {SERIES: series, DUPLICATE: fingerprint}


async def _filter_row(stub: Any, db: Path, label: str, request: Any, calls: int, count: int) -> Row:
    """The first page of one filter, served and bare: p50 (the figure) and p99 (the note)."""
    query = dataclasses.replace(video_query(request, request.path_prefix), limit=PAGE)
    await stub.ListVideos(request)  # warm
    served: list[float] = []
    deadline = time.perf_counter() + FILTER_SECONDS
    while len(served) < calls and (
        len(served) < FILTER_CALLS_MIN or time.perf_counter() < deadline
    ):
        started = time.perf_counter()
        response = await stub.ListVideos(request)
        served.append((time.perf_counter() - started) * 1000)
    sql, params = video_page_sql(query, "?")
    select = f"SELECT id, {VIDEO_COLUMNS} FROM videos{sql}"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        (matching,) = conn.execute(
            f"SELECT count(*) FROM (SELECT 1 FROM videos{sql})", [*params[:-1], count]
        ).fetchone()
        if len(response.videos) != min(PAGE, matching):
            raise RuntimeError(f"{label}: a page of {len(response.videos)} of {matching} videos")
        bare = _warm_timed(lambda: conn.execute(select, params).fetchall(), len(served))
    p99, bare_p99 = percentile(served, 99), percentile(bare, 99)
    return Row(
        bench=BENCH,
        figure=_filter_figure(label),
        value=percentile(served, 50),
        baseline=percentile(bare, 50),
        baseline_name="the same query on SQLite, bare",
        unit="ms",
        runs=[
            {
                "value": percentile(served, 50),
                "baseline": percentile(bare, 50),
                "p99": p99,
                "baseline_p99": bare_p99,
                "calls": len(served),
                "matching": matching,
            }
        ],
        note=f"{matching:,} of {count:,} videos match; p99 {p99:.2f} ms (bare {bare_p99:.2f}), "
        f"{len(served)} calls",
    )


def _warm_timed(call: Callable[[], object], calls: int) -> list[float]:
    call()  # warm
    return _timed(call, calls)
