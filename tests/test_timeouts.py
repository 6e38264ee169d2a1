"""A test that outlives its timeout fails with a short reason (tests/_timeouts.py): the test's
name, its limit and what it was waiting for, not the stacks of every thread of the process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

HANGING = """
import asyncio
import threading
import time

import pytest


async def wait_for_the_event(event: asyncio.Event) -> None:
    await event.wait()


@pytest.mark.timeout(1)
async def test_awaits_forever() -> None:
    await wait_for_the_event(asyncio.Event())


@pytest.mark.timeout(1)
def test_blocks_forever() -> None:
    threading.Event().wait()


@pytest.mark.timeout(1)
async def test_blocks_the_loop() -> None:
    time.sleep(30)
"""


@pytest.mark.slow
def test_a_timed_out_test_names_what_it_awaited(tmp_path: Path) -> None:
    test_file = tmp_path / "test_hangs.py"
    test_file.write_text(HANGING)
    # Threads that would each add a stack to pytest-timeout's own dump.
    (tmp_path / "conftest.py").write_text(
        "import threading\n"
        "_stop = threading.Event()\n"
        "for n in range(20):\n"
        "    threading.Thread(target=_stop.wait, name=f'idle-{n}', daemon=True).start()\n"
    )
    ini = tmp_path / "pytest.ini"
    ini.write_text(
        "[pytest]\nasyncio_mode = auto\nasyncio_default_fixture_loop_scope = function\n"
        "filterwarnings = error\n"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-p",
            "_timeouts",
            "-p",
            "no:cacheprovider",
            "-q",
            "-c",
            str(ini),
            str(test_file),
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": str(TESTS), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    out = done.stdout + done.stderr
    assert "3 failed" in out, out
    assert "Stack of" not in out, out  # no thread dumps
    assert len(out.splitlines()) < 80, out
    assert "Timeout: test_hangs.py::test_awaits_forever did not finish in 1 s" in out, out
    assert "wait_for_the_event (" in out and "Event.wait (" in out, out
    assert "Timeout: test_hangs.py::test_blocks_forever did not finish in 1 s" in out, out
    assert "test_blocks_forever (" in out, out
    assert "Timeout: test_hangs.py::test_blocks_the_loop did not finish in 1 s" in out, out
