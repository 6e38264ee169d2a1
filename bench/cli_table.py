"""6. The command line's videos table: `mediascan videos --limit 0` over a library of 50,000
videos (written straight into the server's database, no file probed), printed to a file, against
`mediascan videos --limit 0 --json` of the same videos: the same calls and pages, so the ratio is
the price of the table. Target: the table in at most 3 s.
"""

from __future__ import annotations

import asyncio
import subprocess
import time

from mediascan.server.testing import library_rows, store_videos

from .common import BIN, Context, Row, Sizes, mediascan_server, paired

BENCH = "6 cli videos table"


def figures(sizes: Sizes) -> list[str]:
    return [f"seconds for {sizes.table_rows:,} rows"]


async def run(ctx: Context) -> list[Row]:
    count = ctx.sizes.table_rows
    db = ctx.fresh("cli-table-library") / "mediascan.db"
    await store_videos(db, library_rows(count))
    ctx.log(f"{BENCH}: {count:,} videos in {db}")
    server, _ = mediascan_server(ctx, "cli-table", "--db", str(db))
    runs: list[tuple[float | None, float | None]] = []
    try:
        for number in range(1, ctx.sizes.runs + 1):
            table = await asyncio.to_thread(_seconds, server.address, count, [])
            as_json = await asyncio.to_thread(_seconds, server.address, count, ["--json"])
            ctx.log(f"{BENCH}: run {number}: table {table:.2f} s, --json {as_json:.2f} s")
            runs.append((table, as_json))
    finally:
        await asyncio.to_thread(server.stop)
    return [
        paired(
            BENCH,
            f"seconds for {count:,} rows",
            runs,
            baseline_name="the same videos with --json",
            unit="s",
            target=("<=", 3.0),
            target_on="value",
        )
    ]


def _seconds(address: str, count: int, extra: list[str]) -> float:
    """How long `mediascan videos --limit 0` takes, its output going to a file (not a terminal)."""
    argv = [str(BIN / "mediascan"), "--server", address, "videos", "--limit", "0", *extra]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, timeout=600, check=False)
    seconds = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"{argv} failed: {done.stderr}")
    rows = done.stdout.count("\n") - 2 if not extra else done.stdout.count('"videoId"')
    if rows != count:
        raise RuntimeError(f"{argv} printed {rows} videos, not {count}")
    return seconds
