"""`mediascan` / `python -m mediascan.client`: the command line."""

from __future__ import annotations

import os
import sys

# gRPC's C core writes lines of its own to stderr (one per failed TLS handshake, say), which would
# repeat what the command line says in its own words: only its errors, unless the user sets
# GRPC_VERBOSITY. Read once when grpc is first imported, so this comes before the import below.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")


def main() -> int:
    from .cli import main as run

    return run()


if __name__ == "__main__":
    sys.exit(main())
