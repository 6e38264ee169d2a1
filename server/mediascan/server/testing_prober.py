"""For tests: a prober that hangs or aborts on marked files, and a whole server that uses it.

The production prober (`python -m mediascan.server.probe`) has no fault hook. Tests that need a
job held running (a probe that hangs) or a prober that dies on a file pass this module's prober
in through the Python API: `ProbePool(command=prober_command("hang", MARK))`,
`MediascanServer(config, prober_command=...)`. A test that needs a whole `mediascan-server`
process runs `python -m mediascan.server.testing_prober server FAULT -- SERVER-ARGS...`: the
server's own `main()` with this prober injected.

FAULT is `KIND:MARK`: `hang` (sleep until killed) or `crash` (abort, SIGABRT) on any file whose
path contains MARK, or `hang-decode` (hang only when asked to DECODE-verify such a file); every
other file is handled by the real prober. A prober about to hang writes its pid, a space, the
file's path and a newline to the FIFO that `MEDIASCAN_TEST_HANG_SIGNAL` names, if set (a test
waits on it).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence

KINDS = ("hang", "crash", "hang-decode")
#: The environment variable naming the FIFO a hanging test prober writes the path to.
HANG_SIGNAL = "MEDIASCAN_TEST_HANG_SIGNAL"
MODULE = "mediascan.server.testing_prober"


def prober_command(kind: str, mark: str) -> list[str]:
    """The command of a prober process that hangs or aborts (`kind`) on paths holding `mark`."""
    if kind not in KINDS or not mark:
        raise ValueError(
            f"a test prober fault is hang:MARK, crash:MARK or hang-decode:MARK, not {kind}:{mark}"
        )
    return [sys.executable, "-m", MODULE, "probe", f"{kind}:{mark}"]


def parse_fault(fault: str) -> list[str]:
    """`prober_command` of a `KIND:MARK` text."""
    kind, _, mark = fault.partition(":")
    return prober_command(kind, mark)


def _fault(fault: str) -> Callable[[str, str], None]:
    kind, _, mark = fault.partition(":")

    def before(path: str, op: str) -> None:
        if mark not in path or (kind == "hang-decode" and op != "decode"):
            return
        if kind == "crash":
            os.abort()
        signal = os.environ.get(HANG_SIGNAL)
        if signal:
            with open(signal, "w") as fifo:  # blocks until the test reads
                fifo.write(f"{os.getpid()} {path}\n")
        time.sleep(1e6)

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
