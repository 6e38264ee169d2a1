"""`python -m bench.serve --loop=uvloop ARGS...`: mediascan-server's own main() under another
event loop, for the uvloop comparison (mediascan has no --loop flag of its own)."""

from __future__ import annotations

import os
import sys

# Like mediascan.server.__main__: gRPC's C core logs only errors unless told otherwise.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def main() -> int:
    args = sys.argv[1:]
    loop = "asyncio"
    if args and args[0].startswith("--loop="):
        loop = args.pop(0).removeprefix("--loop=")
    from bench.common import use_loop

    use_loop(loop)
    from mediascan.server.__main__ import main as server_main

    return server_main(args)


if __name__ == "__main__":
    sys.exit(main())
