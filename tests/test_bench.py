"""The benchmark harness keeps working (issue 6): `python -m bench --quick` (what `make bench-quick`
runs) as a subprocess must produce every figure of every benchmark, with its baseline and ratio.

How fast anything is, is never checked here: speed is measured by `make bench`, against baselines
measured in the same run (docs/benchmarks.md), not asserted in tests on a machine of unknown load.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = {
    "submit",
    "fanout",
    "first_scan",
    "rescan",
    "jobs",
    "cli_table",
    "cluster",
    "verify",
    "list_videos",
    "library_size",
    "library_watch",
}
#: bench-quick takes about a minute alone; this leaves room for a loaded CI machine, and for
#: the tests of another run (two `make test` at once, each with a worker per core).
LIMIT = 420


def _finite(value: object) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


@pytest.mark.slow
@pytest.mark.xdist_group("heavy")
@pytest.mark.timeout(LIMIT + 30)
def test_bench_quick_produces_every_figure(tmp_path: Path) -> None:
    report_path = tmp_path / "bench.json"
    # A session of its own: past the limit, the whole group goes (the bench's servers too).
    bench = subprocess.Popen(
        [sys.executable, "-m", "bench", "--quick", "--json", str(report_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        stdout, stderr = bench.communicate(timeout=LIMIT)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(bench.pid, signal.SIGKILL)
        bench.communicate()
    assert bench.returncode == 0, f"bench --quick failed:\n{stderr[-6000:]}"
    report = json.loads(report_path.read_text())
    assert report["mode"] == "quick"
    assert report["failures"] == {}
    assert set(report["expected"]) == BENCHMARKS

    rows = {row["key"]: row for row in report["rows"]}
    expected = [key for keys in report["expected"].values() for key in keys]
    assert len(expected) >= 14
    missing = [key for key in expected if key not in rows]
    assert not missing, f"figures not produced: {missing}"
    for key in expected:
        row = rows[key]
        assert _finite(row["value"]), f"{key}: no value ({row})"
        assert _finite(row["baseline"]), f"{key}: no baseline ({row})"
        assert _finite(row["ratio"]), f"{key}: no ratio ({row})"
        if "/s" in key:
            assert row["value"] > 0 and row["baseline"] > 0, f"{key}: nothing measured ({row})"
        assert row["runs"], f"{key}: no runs recorded"

    # The table on stdout: one line per figure, with its ratio.
    table = [line for line in stdout.splitlines() if line.startswith("| ")]
    for key in expected:
        bench, figure = key.split(" | ")
        assert any(f"| {bench} | {figure} |" in line for line in table), f"{key} not in table"
