"""`mediascan-server` / `python -m mediascan.server`: run the gRPC server."""

from __future__ import annotations

import os

# gRPC's C core writes lines of its own to stderr (e.g. one per failed TLS handshake), which
# would break --log-format json: only its errors, unless the operator sets GRPC_VERBOSITY.
# Read once when grpc is first imported, so this comes before the imports below.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import asyncio
import sys
from collections.abc import Sequence

from .app import ConfigError, serve
from .config import load_config
from .logs import configure_logging
from .store import SchemaTooNew


def main(argv: Sequence[str] | None = None, *, prober_command: Sequence[str] | None = None) -> int:
    """Run the server with the arguments `argv`; `prober_command` replaces the prober process
    (tests: `testing_prober.py`)."""
    config = load_config(argv)
    configure_logging(config.log_level, config.log_format)
    try:
        return asyncio.run(serve(config, prober_command=prober_command))
    except (ConfigError, SchemaTooNew) as exc:
        print(f"mediascan-server: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
