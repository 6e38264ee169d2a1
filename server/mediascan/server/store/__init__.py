"""Storage: the `JobStore` and `LibraryStore` protocols (`protocol.py`) and their two
implementations, SQLite (`sqlite/`) and PostgreSQL (`postgres/`, imported from there: it loads
the driver). `factory.py` picks one from `--db`. `Store` is the SQLite store."""

from __future__ import annotations

from .protocol import (
    VIDEO_ORDERS,
    CancelOutcome,
    ChangedJob,
    DatabaseLost,
    DatabaseTimeout,
    Fence,
    FileErrorRows,
    HealthUpdate,
    InsertOutcome,
    JobChange,
    JobFeed,
    JobStore,
    LeaseLost,
    LibraryIndex,
    LibraryListing,
    LibraryStore,
    MovedVideo,
    QueueFull,
    RequestIdReused,
    SchemaTooNew,
    StorageError,
    VideoQuery,
    VideoRow,
    library_key,
    library_key_path,
)
from .sqlite.store import SqliteStore

#: The SQLite store (the name older callers import).
Store = SqliteStore

__all__ = [
    "VIDEO_ORDERS",
    "CancelOutcome",
    "ChangedJob",
    "DatabaseLost",
    "DatabaseTimeout",
    "Fence",
    "FileErrorRows",
    "HealthUpdate",
    "InsertOutcome",
    "JobChange",
    "JobFeed",
    "JobStore",
    "LeaseLost",
    "LibraryIndex",
    "LibraryListing",
    "LibraryStore",
    "MovedVideo",
    "QueueFull",
    "RequestIdReused",
    "SchemaTooNew",
    "SqliteStore",
    "StorageError",
    "Store",
    "VideoQuery",
    "VideoRow",
    "library_key",
    "library_key_path",
]
