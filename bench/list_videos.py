"""9. ListVideos on a large library (rows written straight into the server's database, no file
probed): for each `order_by`, the first page and a page 90% deep, 100 videos each, latency p50
and p99 over real gRPC calls, against the same query run bare on an indexed SQLite connection
(no server, no protobuf). Keyset pages on an index of each sort key: a deep page should cost
what the first does.
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

from mediascan.server.engine.tokens import decode_videos_token, encode_videos_token
from mediascan.server.store import VIDEO_ORDERS, VideoQuery
from mediascan.server.store.videos import VIDEO_COLUMNS, sqlite_page_parts, video_page_sql
from mediascan.server.testing import library_rows, store_videos
from mediascan.server.video_filters import filter_key
from mediascan.v1 import scan_pb2, scan_pb2_grpc

from .common import CHANNEL_OPTIONS, Context, Row, mediascan_server, percentile

BENCH = "9 list videos"
PAGE = 100
CHUNK = 100_000  # rows written a transaction at a time
DEEP = 0.9  # where the deep page starts, as a share of the library


def _orders() -> list[str]:
    return [f"{order}{way}" for order in VIDEO_ORDERS for way in ("", " desc")]


def figures(sizes: Any) -> list[str]:
    return [
        f"{page} page by {order}, ms {stat}"
        for order in _orders()
        for page in ("first", "deep")
        for stat in ("p50", "p99")
    ]


async def run(ctx: Context) -> list[Row]:
    count, calls = ctx.sizes.list_rows, ctx.sizes.list_calls
    db = ctx.fresh("list-videos-library") / "mediascan.db"
    for start in range(0, count, CHUNK):
        await store_videos(db, library_rows(min(CHUNK, count - start), start=start))
    ctx.log(f"{BENCH}: {count:,} videos in {db}")
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
