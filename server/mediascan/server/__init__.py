"""The mediascan gRPC server: scans video folders as asynchronous jobs.

The names below are imported on first use, so that the prober processes
(`python -m mediascan.server.probe`) start without loading gRPC.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .app import MediascanServer, serve
    from .config import Config, load_config

__all__ = ["Config", "MediascanServer", "load_config", "serve"]

_HOMES = {"MediascanServer": ".app", "serve": ".app", "Config": ".config", "load_config": ".config"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
