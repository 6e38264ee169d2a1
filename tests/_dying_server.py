"""A `mediascan-server` whose named background task is cancelled once it serves, for the
supervision tests: `python tests/_dying_server.py TASK -- SERVER-ARGS...`.

The server is the real one (`app.serve`, the same main path as `mediascan-server`); the kill is a
collaborator passed in through the Python API (`serve(on_started=...)`), not a hook of the
production command line or environment."""

from __future__ import annotations

import asyncio
import sys

from mediascan.server.app import MediascanServer, serve
from mediascan.server.config import load_config
from mediascan.server.logs import configure_logging


def main(argv: list[str]) -> int:
    task_name, rest = argv[0], argv[1:]
    if rest[:1] == ["--"]:
        rest = rest[1:]
    config = load_config(rest)
    configure_logging(config.log_level, config.log_format)

    def kill(server: MediascanServer) -> None:
        assert server.supervisor is not None
        server.supervisor.tasks[task_name].cancel()

    return asyncio.run(serve(config, on_started=kill))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
