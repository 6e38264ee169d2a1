"""`mediascan-server` / `python -m mediascan.server`: run the gRPC server."""

from __future__ import annotations

import asyncio
import logging
import sys
from collections.abc import Sequence

from .app import ConfigError, serve
from .config import load_config
from .store import SchemaTooNew


def main(argv: Sequence[str] | None = None) -> int:
    config = load_config(argv)
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return asyncio.run(serve(config))
    except (ConfigError, SchemaTooNew) as exc:
        print(f"mediascan-server: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
