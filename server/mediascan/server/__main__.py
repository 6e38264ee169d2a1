"""`mediascan-server` / `python -m mediascan.server`: run the gRPC server, or, as
`mediascan-server copy-db`, copy a SQLite database into PostgreSQL (`copy_command.py`)."""

from __future__ import annotations

import os

# gRPC's C core writes lines of its own to stderr (e.g. one per failed TLS handshake), which
# would break --log-format json: only its errors, unless the operator sets GRPC_VERBOSITY.
# Read once when grpc is first imported, so this comes before gRPC is imported (in `_serve`).
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import asyncio
import sys
from collections.abc import Sequence

from . import copy_command


def main(argv: Sequence[str] | None = None, *, prober_command: Sequence[str] | None = None) -> int:
    """Run the server with the arguments `argv` (the copy with `copy-db ...`); `prober_command`
    replaces the prober process (tests: `testing_prober.py`)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == [copy_command.COMMAND]:
        return copy_command.run(args[1:])
    return _serve(args, prober_command)


def _serve(argv: Sequence[str], prober_command: Sequence[str] | None) -> int:
    # Imported here: the copy loads no gRPC.
    from .app import ConfigError, serve
    from .config import load_config
    from .logs import configure_logging
    from .store import SchemaTooNew

    config = load_config(argv)
    configure_logging(config.log_level, config.log_format)
    try:
        return asyncio.run(serve(config, prober_command=prober_command))
    except (ConfigError, SchemaTooNew) as exc:
        print(f"mediascan-server: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
