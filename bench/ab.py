"""`python -m bench.ab BASE [--only NAMES] [--rounds N] [--runs N]`: the same benchmarks on the
commit BASE and on this checkout, alternately, in one sitting, side by side.

A figure of one commit measured on another day (or another machine) says little: this machine's
speed changes from day to day and with what else runs. Measured alternately, base then head, a
change of a few percent shows above the noise, or is seen to be within it. BASE is checked out
in a temporary git worktree and run with this checkout's virtualenv (its code first on
PYTHONPATH), so its dependencies must be the ones installed here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HEAD = Path(__file__).resolve().parent.parent


def _run(tree: Path, args: list[str], out: Path, *, base: bool) -> list[dict[str, Any]]:
    env = dict(os.environ)
    if base:  # the base's packages before this checkout's (installed editable)
        parts = [str(tree / part) for part in ("client", "protos", "server")]
        env["PYTHONPATH"] = os.pathsep.join(parts)
    command = [sys.executable, "-m", "bench", *args, "--quiet", "--json", str(out)]
    subprocess.run(command, cwd=tree, env=env, check=True, stdout=subprocess.DEVNULL)
    rows: list[dict[str, Any]] = json.loads(out.read_text())["rows"]
    return rows


def _table(base: list[list[dict[str, Any]]], head: list[list[dict[str, Any]]]) -> list[str]:
    """One line a figure (those of head, in its order): each round's value for base and head,
    and head / base of the medians ("-" where base has no such figure)."""
    lines = ["| figure | base | head | head / base |", "| --- | ---: | ---: | ---: |"]
    for row in head[0]:
        key = (row["bench"], row["figure"])
        b = [r["value"] for rows in base for r in rows if (r["bench"], r["figure"]) == key]
        h = [r["value"] for rows in head for r in rows if (r["bench"], r["figure"]) == key]
        ratio = f"{statistics.median(h) / statistics.median(b):.3f}" if b and b[0] else "-"
        lines.append(f"| {key[0]}: {key[1]} | {_values(b)} | {_values(h)} | {ratio} |")
    return lines


def _values(values: list[float]) -> str:
    return " / ".join(f"{v:,.4g}" for v in values) or "-"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("base", help="the commit to compare this checkout with")
    parser.add_argument("--only", default="submit", help="benchmarks, as for python -m bench")
    parser.add_argument("--rounds", type=int, default=2, help="base-then-head rounds")
    parser.add_argument("--runs", type=int, default=3, help="runs per figure in each round")
    options = parser.parse_args(argv)
    args = ["--only", options.only, "--runs", str(options.runs)]
    with tempfile.TemporaryDirectory(prefix="mediascan-ab-") as scratch:
        tree = Path(scratch) / "base"
        subprocess.run(
            ["git", "worktree", "add", "--detach", "--quiet", str(tree), options.base],
            cwd=HEAD,
            check=True,
        )
        try:
            base: list[list[dict[str, Any]]] = []
            head: list[list[dict[str, Any]]] = []
            for number in range(options.rounds):
                out = Path(scratch) / f"{number}.json"
                base.append(_run(tree, args, out, base=True))
                head.append(_run(HEAD, args, out, base=False))
                print(f"round {number + 1}/{options.rounds} done", file=sys.stderr)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=HEAD)
    print(f"base {options.base} against this checkout, {options.rounds} rounds, alternately:")
    print("\n".join(_table(base, head)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
