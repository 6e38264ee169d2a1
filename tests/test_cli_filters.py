"""`mediascan videos` with the filters and orders of issue 14, section 5: the real console
script against a real server, on a library written straight into its store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from test_cli import assert_no_traceback, run
from test_video_filters import ROWS, expected

from mediascan.server.testing import store_videos


async def test_videos_takes_the_new_filters_and_order_by(make_server: Any, tmp_path: Path) -> None:
    await store_videos(tmp_path / "mediascan.db", ROWS)
    server = await make_server()
    address = ("--server", server.address)

    async def paths(*args: str) -> list[str]:
        result = await run("videos", "--limit", "0", "--json", *args, *address)
        assert result.code == 0, result
        return [video["path"] for video in result.json().get("videos", [])]

    assert await paths("--order-by", "size", "--desc") == expected(order="size_bytes", desc=True)
    assert await paths("--order-by", "probe-time") == expected(order="probe_time")
    assert await paths(
        "--container", "avi", "--audio-codec", "aac", "--min-width", "1280", "--no-truncated"
    ) == expected(
        lambda r: (
            r.container == "avi" and r.audio_codec == "aac" and r.width >= 1280 and not r.truncated
        )
    )
    assert await paths(
        "--rotation", "-90", "--max-height", "1080", "--min-height", "720", "--vfr"
    ) == expected(lambda r: r.rotation == -90 and 720 <= r.height <= 1080 and r.variable_frame_rate)
    assert await paths("--hdr", "hlg", "--truncated", "--order-by", "duration") == expected(
        lambda r: r.hdr == 4 and r.truncated, order="duration"
    )

    # A table, in order, with the filters said when nothing matches.
    result = await run("videos", "--order-by", "modify-time", "--limit", "3", *address)
    assert [line.split()[0] for line in result.stdout.splitlines()[2:]] == expected(
        order="modify_time"
    )[:3]
    result = await run("videos", "--container", "mov", "--hdr", "none", "--no-vfr", *address)
    assert result.code == 0, result
    assert "no videos in container mov with dynamic range none of constant frame rate" in (
        result.stderr
    )

    # The server's word on a bad combination, naming the field.
    result = await run("videos", "--min-width", "1920", "--max-width", "640", *address)
    assert result.code == 2
    assert "INVALID_ARGUMENT" in result.stderr and "min_width" in result.stderr
    assert_no_traceback(result)
