"""The Python client of mediascan: `ScanClient` (asyncio) and the `mediascan` command line."""

from mediascan.client.client import TERMINAL_STATES, ScanClient
from mediascan.client.errors import MediascanError

__all__ = ["TERMINAL_STATES", "MediascanError", "ScanClient"]
