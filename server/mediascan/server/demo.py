"""`make demo`: make sample videos, start a server, scan them with a live progress bar, list them.

Everything goes under ./var/demo (videos and database), so a second run shows a rescan.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from pathlib import Path

from .testing import make_corpus, make_many

BIN = Path(sys.executable).parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make demo", description=__doc__)
    parser.add_argument("--dir", type=Path, default=Path("var/demo"), help="where to work")
    parser.add_argument("--copies", type=int, default=300, help="extra sample videos to make")
    parser.add_argument("--fresh", action="store_true", help="start from an empty library")
    args = parser.parse_args(argv)

    root: Path = args.dir.resolve()
    videos = root / "videos"
    if args.fresh and root.exists():
        shutil.rmtree(root)
    if not videos.exists():
        print(f"making sample videos in {videos} ...", flush=True)
        corpus = make_corpus(videos / "samples")
        make_many(videos / "many", args.copies)
        print(
            f"  {len(corpus.valid)} sample videos in several containers, {len(corpus.bad)} broken "
            f"files, and {args.copies} copies of a small clip",
            flush=True,
        )
    server = subprocess.Popen(
        [BIN / "mediascan-server", "--listen", "127.0.0.1:0", "--db", str(root / "mediascan.db")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert server.stdout is not None
        first = server.stdout.readline().strip()
        address = first.rsplit(" ", 1)[-1]
        if not first.startswith("mediascan-server listening on"):
            print(f"the server did not start: {first!r}", file=sys.stderr)
            return 1
        print(f"server started on {address}\n", flush=True)
        cli = [str(BIN / "mediascan"), "--server", address]
        print(f"$ mediascan scan {videos} --watch", flush=True)
        scan = subprocess.run([*cli, "scan", str(videos), "--watch"], check=False)
        print(f"\n$ mediascan videos --prefix {videos / 'samples'}", flush=True)
        subprocess.run([*cli, "videos", "--prefix", str(videos / "samples")], check=False)
        print(
            "\nRun `make demo` again to see a rescan: unchanged files are not probed again.",
            flush=True,
        )
        return scan.returncode
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
