"""For tests: a prober that hangs or aborts on marked files, and a whole server that uses it.

The production prober (`python -m mediascan.server.probe`) has no fault hook. Tests that need a
job held running (a probe that hangs) or a prober that dies on a file pass this module's prober
in through the Python API: `ProbePool(command=prober_command("hang", MARK))`,
`MediascanServer(config, prober_command=...)`. A test that needs a whole `mediascan-server`
process runs `python -m mediascan.server.testing_prober server FAULT -- SERVER-ARGS...`: the
server's own `main()` with this prober injected.

FAULT is `KIND:MARK`: `hang` (sleep until killed) or `crash` (abort, SIGABRT) on any file whose
path contains MARK; every other file is probed by the real prober.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence

KINDS = ("hang", "crash")
MODULE = "mediascan.server.testing_prober"


def prober_command(kind: str, mark: str) -> list[str]:
    """The command of a prober process that hangs or aborts (`kind`) on paths holding `mark`."""
    if kind not in KINDS or not mark:
        raise ValueError(f"a test prober fault is hang:MARK or crash:MARK, not {kind}:{mark}")
    return [sys.executable, "-m", MODULE, "probe", f"{kind}:{mark}"]


def parse_fault(fault: str) -> list[str]:
    """`prober_command` of a `KIND:MARK` text."""
    kind, _, mark = fault.partition(":")
    return prober_command(kind, mark)


def _fault(fault: str) -> Callable[[str], None]:
    kind, _, mark = fault.partition(":")

    def before(path: str) -> None:
        if mark in path:
            if kind == "hang":
                time.sleep(1e6)
            else:
                os.abort()

    return before


def main(argv: Sequence[str]) -> int:
    """`probe FAULT` runs a prober; `server FAULT -- ARGS` runs a server whose probers do."""
    if len(argv) >= 2 and argv[0] == "probe":
        from .probe import serve

        serve(before=_fault(argv[1]))
        return 0
    if len(argv) >= 2 and argv[0] == "server":
        from .__main__ import main as server_main

        rest = list(argv[2:])
        if rest[:1] == ["--"]:
            rest = rest[1:]
        return server_main(rest, prober_command=parse_fault(argv[1]))
    print(f"usage: python -m {MODULE} probe|server KIND:MARK [-- SERVER-ARGS]", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
