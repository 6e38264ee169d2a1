"""The docs' runnable examples run: the `ScanClient` example of docs/client.md, through a server
restart, against a real server process."""

from __future__ import annotations

import asyncio
import re
import sys
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
TIMEOUT = 90.0


def python_blocks(page: Path) -> list[str]:
    """The ```python blocks of a Markdown page, in order."""
    return re.findall(r"^```python\n(.*?)^```$", page.read_text(), flags=re.S | re.M)


@pytest.mark.slow
async def test_client_example_follows_a_scan_through_a_restart(
    spawn_server: Any, big_folder: Path, tmp_path: Path
) -> None:
    (example,) = python_blocks(DOCS / "client.md")
    script = tmp_path / "example.py"
    script.write_text(example)
    first = await spawn_server("--shutdown-grace", "0")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        first.address,
        str(big_folder),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(TIMEOUT):
        while not lines or not lines[-1].startswith("progress"):
            line = await process.stdout.readline()
            assert line, (lines, await process.stderr.read() if process.stderr else b"")
            lines.append(line.decode().rstrip("\n"))
        first.terminate()
        assert await first.wait(TIMEOUT) == 0
        await spawn_server("--listen", first.address, "--shutdown-grace", "0", db=first.db)
        rest, errors = await process.communicate()
    lines += rest.decode().splitlines()
    assert process.returncode == 0, (lines, errors.decode())
    assert "ended SUCCEEDED after 2 attempt(s)" in lines, lines
    assert lines.count("state SUCCEEDED") == 1, lines
    videos = sum(1 for _ in big_folder.iterdir())
    assert f"{videos} videos of at least 0.1 s under {big_folder}" in lines, lines
    assert lines[-1] == "as expected: NOT_FOUND", lines
