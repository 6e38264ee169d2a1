"""Path escaping: a path that is not UTF-8 (Python keeps its undecodable bytes as surrogate
escapes) cannot travel in a gRPC string; it is shown escaped, losslessly, and said so."""

from __future__ import annotations

import os


def encodes(path: str) -> bool:
    """True if `path` is valid UTF-8 (it can be stored and sent as it is)."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def escape_path(path: str) -> str:
    """A path as valid UTF-8, losslessly: a name that is not UTF-8 (Python keeps its bytes as
    surrogate escapes) has each undecodable byte written `\\xHH` and each backslash doubled;
    a path that is UTF-8 is returned as it is."""
    if encodes(path):
        return path
    raw = os.fsencode(path).replace(b"\\", b"\\\\")
    return raw.decode("utf-8", "backslashreplace")


def escaped(path: str, message: str) -> tuple[str, str]:
    """What a job reports for `path` and its `message`: a path that is not UTF-8 is escaped
    (gRPC strings must be UTF-8), and the message says so."""
    if encodes(path):
        return path, message
    return (
        escape_path(path),
        f"{message} (the path is not valid UTF-8: shown with \\xHH for each "
        "undecodable byte and \\\\ for each backslash)",
    )
