"""The mediascan gRPC server: scans video folders as asynchronous jobs."""

from .app import MediascanServer, serve
from .config import Config, load_config

__all__ = ["Config", "MediascanServer", "load_config", "serve"]
