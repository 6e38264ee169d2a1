"""The command line's health checks, moves and duplicates (issue 14, sections 3 and 4): the real
`mediascan` console script as a subprocess against a real server, on real files."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from _library_helpers import real, tiny_video
from test_cli import assert_no_traceback, run
from test_verify import damaged_copy

from mediascan.server.testing import make_video


async def test_verify_decode_health_filter_moves_and_duplicates(
    server: Any, tmp_path: Path
) -> None:
    folder = tmp_path / "lib"
    good = folder / "good.mp4"
    make_video(good, seconds=3, audio_codec="aac")
    damaged_copy(good, folder / "damaged.mp4", at=0.4, length=3000)
    shutil.copy2(good, folder / "copy.mp4")
    address = ("--server", server.address)

    result = await run("scan", str(folder), "--verify", "decode", "--watch", *address)
    assert result.code == 0, result
    assert_no_traceback(result)
    assert "3 files: 3 added" in result.stdout
    assert "damaged.mp4: DATA_LOSS: decoded with" in result.stdout

    result = await run("videos", "--prefix", str(folder), "--health", "warnings", *address)
    assert result.code == 0, result
    assert [line.split()[0] for line in result.stdout.splitlines()[2:]] == [
        real(folder / "damaged.mp4")
    ]
    result = await run("video", str(folder / "damaged.mp4"), *address)
    assert "health       warnings: " in result.stdout and "decoding errors, the first at" in (
        result.stdout
    )
    assert "fingerprint  " in result.stdout

    result = await run("duplicates", "--prefix", str(folder), "--confirm", *address)
    assert result.code == 0, result
    header, *paths = result.stdout.splitlines()
    assert header.endswith(
        "2 files of " + header.split(" files of ")[1].split(" (")[0] + (" (confirmed identical)")
    )
    assert sorted(p.strip() for p in paths) == sorted(
        real(folder / n) for n in ("copy.mp4", "good.mp4")
    )

    os.rename(folder / "copy.mp4", folder / "renamed.mp4")
    tiny_video(folder / "new.mp4")
    result = await run("scan", str(folder), "--watch", *address)
    assert "4 files: 1 added, 0 updated, 2 unchanged, 0 removed, 1 moved, 0 failed" in result.stdout
