"""Storage: the `JobStore` and `LibraryStore` protocols (`protocol.py`) and their SQLite
implementation (`sqlite/`). `Store` is the SQLite store, the one the server builds."""

from __future__ import annotations

from .protocol import (
    ChangedJob,
    DatabaseLost,
    DatabaseTimeout,
    FileErrorRows,
    InsertOutcome,
    JobChange,
    JobStore,
    LibraryIndex,
    LibraryStore,
    RequestIdReused,
    SchemaTooNew,
    StorageError,
    VideoRow,
    library_key,
    library_key_path,
)
from .sqlite.store import SqliteStore

#: The store the server builds (and the name older callers import).
Store = SqliteStore

__all__ = [
    "ChangedJob",
    "DatabaseLost",
    "DatabaseTimeout",
    "FileErrorRows",
    "InsertOutcome",
    "JobChange",
    "JobStore",
    "LibraryIndex",
    "LibraryStore",
    "RequestIdReused",
    "SchemaTooNew",
    "SqliteStore",
    "StorageError",
    "Store",
    "VideoRow",
    "library_key",
    "library_key_path",
]
