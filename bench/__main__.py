"""`python -m bench [--quick] [--only NAMES] [--loop asyncio|uvloop] [--json PATH]`: run the
benchmarks, print one table (mediascan, baseline, ratio, target) and write it as JSON.

`make bench` runs everything at full size (about 30 minutes on a 2-core machine); `make
bench-quick` runs every benchmark at a small size in about two minutes (the test suite
runs it so that the harness cannot rot; it checks that every figure was produced, never how
fast).
Exit status: 0 when every benchmark produced its figures (targets missed or not), 1 when one
failed to run, 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import shutil
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from . import (
    cli_table,
    cluster,
    fanout,
    first_scan,
    jobs,
    library_size,
    library_watch,
    list_videos,
    rescan,
    submit,
    verify,
)
from .common import (
    FULL,
    LOOPS,
    QUICK,
    ROOT,
    Context,
    Row,
    Sizes,
    machine,
    scratch_base,
    uvloop_available,
)

BENCH_TITLES = {
    "submit": submit.BENCH,
    "fanout": fanout.BENCH,
    "first_scan": first_scan.BENCH,
    "rescan": rescan.BENCH,
    "jobs": jobs.BENCH,
    "cli_table": cli_table.BENCH,
    "cluster": cluster.BENCH,
    "verify": verify.BENCH,
    "list_videos": list_videos.BENCH,
    "library_size": library_size.BENCH,
    "library_watch": library_watch.BENCH,
}

Bench = Callable[[Context], Coroutine[Any, Any, list[Row]]]

BENCHMARKS: dict[str, Bench] = {
    "submit": submit.run,
    "fanout": fanout.run,
    "first_scan": first_scan.run,
    "rescan": rescan.run,
    "jobs": jobs.run,
    "cli_table": cli_table.run,
    "cluster": cluster.run,
    "verify": verify.run,
    "list_videos": list_videos.run,
    "library_size": library_size.run,
    "library_watch": library_watch.run,
}

#: The figures each benchmark produces at a given size (what tests/test_bench.py checks).
FIGURES: dict[str, Callable[[Sizes], list[str]]] = {
    "submit": submit.figures,
    "fanout": fanout.figures,
    "first_scan": first_scan.figures,
    "rescan": rescan.figures,
    "jobs": jobs.figures,
    "cli_table": cli_table.figures,
    "cluster": cluster.figures,
    "verify": verify.figures,
    "list_videos": list_videos.figures,
    "library_size": library_size.figures,
    "library_watch": library_watch.figures,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure mediascan against same-run baselines and print one table.",
    )
    parser.add_argument("--quick", action="store_true", help="every benchmark at a small size")
    parser.add_argument(
        "--only",
        default="",
        help=f"comma-separated subset of: {', '.join(BENCHMARKS)} (default: all)",
    )
    parser.add_argument("--runs", type=int, default=0, help="runs per figure (median)")
    parser.add_argument(
        "--loop", choices=LOOPS, default=None, help="event loop of servers and load generators"
    )
    parser.add_argument("--server-loop", choices=LOOPS, default=None)
    parser.add_argument("--client-loop", choices=LOOPS, default=None)
    parser.add_argument(
        "--json", type=Path, default=None, help="where to write the results as JSON"
    )
    parser.add_argument("--keep", action="store_true", help="keep the scratch trees and logs")
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    args = parser.parse_args(argv)
    args.server_loop = args.server_loop or args.loop or "asyncio"
    args.client_loop = args.client_loop or args.loop or "asyncio"
    if "uvloop" in (args.server_loop, args.client_loop) and not uvloop_available():
        parser.error("uvloop is not installed in this environment (pip install uvloop)")
    names = [n.strip() for n in args.only.split(",") if n.strip()] or list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}: use {', '.join(BENCHMARKS)}")
    args.names = names
    if args.json is None:
        args.json = ROOT / "var" / "bench" / ("quick.json" if args.quick else "latest.json")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    if args.runs:
        sizes = dataclasses.replace(sizes, runs=args.runs)
    scratch = Path(tempfile.mkdtemp(prefix="mediascan-bench-", dir=scratch_base()))
    dbdir = Path(tempfile.mkdtemp(prefix="mediascan-bench-db-"))
    ctx = Context(
        sizes=sizes,
        server_loop=args.server_loop,
        client_loop=args.client_loop,
        scratch=scratch,
        dbdir=dbdir,
        verbose=not args.quiet,
    )
    info = machine()
    ctx.log(
        f"{'quick' if sizes.quick else 'full'} run of {', '.join(args.names)}; server loop "
        f"{ctx.server_loop}, client loop {ctx.client_loop}; trees in {scratch}, databases in "
        f"{dbdir}"
    )
    rows: list[Row] = []
    failures: dict[str, str] = {}
    seconds: dict[str, float] = {}
    load: dict[str, list[float]] = {}
    started = time.monotonic()
    try:
        for name in args.names:
            began = time.monotonic()
            before = loadavg()
            try:
                rows.extend(asyncio.run(BENCHMARKS[name](ctx)))
            except Exception:
                failures[name] = traceback.format_exc()
                ctx.log(f"{name} FAILED:\n{failures[name]}")
            seconds[name] = round(time.monotonic() - began, 1)
            load[name] = [before, loadavg()]
            ctx.log(f"{name} took {seconds[name]:.0f} s (load average {before} -> {loadavg()})")
    finally:
        if args.keep:
            ctx.log(f"kept {scratch} and {dbdir}")
        else:
            shutil.rmtree(scratch, ignore_errors=True)
            shutil.rmtree(dbdir, ignore_errors=True)
    total = time.monotonic() - started
    print(render(rows, info, ctx, total))
    report = {
        "mode": "quick" if sizes.quick else "full",
        "machine": info,
        "server_loop": ctx.server_loop,
        "client_loop": ctx.client_loop,
        "sizes": dataclasses.asdict(sizes),
        "seconds": seconds,
        "load_average_1min": load,
        "total_seconds": round(total, 1),
        "benchmarks": args.names,
        "expected": {
            name: [f"{BENCH_TITLES[name]} | {figure}" for figure in FIGURES[name](sizes)]
            for name in args.names
        },
        "failures": failures,
        "notes": ctx.notes,
        "rows": [row.as_json() for row in rows],
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    ctx.log(f"wrote {args.json}")
    return 1 if failures else 0


def loadavg() -> float:
    """The 1-minute load average: other work on the machine shows here."""
    with open("/proc/loadavg") as f:
        return float(f.read().split()[0])


# -- the table ----------------------------------------------------------------------------------


def number(value: float | None) -> str:
    if value is None:
        return "n/a"
    size = abs(value)
    if size >= 1000:
        return f"{value:,.0f}"
    if size >= 100:
        return f"{value:.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


def target_text(row: Row) -> str:
    if row.target is None:
        return ""
    op, limit = row.target
    sign = "≥" if op == ">=" else "≤"
    if row.target_on == "value":
        return f"value {sign} {limit:g}"
    return f"ratio {sign} {limit:g}"


def render(rows: list[Row], info: dict[str, Any], ctx: Context, total: float) -> str:
    header = (
        f"mediascan benchmarks ({'quick' if ctx.sizes.quick else 'full'}): {info['date']}, "
        f"{info['nproc']} cores ({info['cpu_model']}), {info['mem_total_gib']} GiB, Python "
        f"{info['python']}, grpcio {info['grpcio']}; server loop {ctx.server_loop}, client "
        f"loop {ctx.client_loop}; medians of {ctx.sizes.runs} run(s); {total:.0f} s"
    )
    table = [
        ["benchmark", "figure", "mediascan", "baseline", "ratio", "target", "met"],
        ["---", "---", "---:", "---:", "---:", "---", "---"],
    ]
    for row in rows:
        met = {None: "", True: "yes", False: "**NO**"}[row.met]
        baseline = number(row.baseline) if row.baseline is not None else ""
        if row.baseline_name and row.baseline is not None:
            baseline += f" ({row.baseline_name})"
        table.append(
            [
                row.bench,
                row.figure,
                number(row.value),
                baseline,
                number(row.ratio) if row.ratio is not None else "",
                target_text(row),
                met,
            ]
        )
    lines = [header, ""]
    lines += ["| " + " | ".join(cells) + " |" for cells in table]
    notes = [f"- {row.bench}, {row.figure}: {row.note}" for row in rows if row.note]
    if notes or ctx.notes:
        lines += ["", "Notes:", *notes, *(f"- {n}" for n in ctx.notes)]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
