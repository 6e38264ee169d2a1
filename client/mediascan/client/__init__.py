"""The Python client of mediascan: `ScanClient` (asyncio), `LibraryMirror` (a library's videos
kept in sync with its change feed) and the `mediascan` command line.

The names below are imported on first use, so that the command line (`mediascan.client.__main__`)
can quiet gRPC's own logging before gRPC is loaded.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .client import TERMINAL_STATES, ScanClient
    from .errors import MediascanError
    from .mirror import LibraryMirror

__all__ = ["TERMINAL_STATES", "LibraryMirror", "MediascanError", "ScanClient"]

_HOMES = {
    "TERMINAL_STATES": ".client",
    "ScanClient": ".client",
    "MediascanError": ".errors",
    "LibraryMirror": ".mirror",
}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(_HOMES[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
