"""Is a library's root there, and is it the file system the library was made on? The rules
that make a library OFFLINE (docs/api.md, "Libraries that go offline"), and its marker file.

The rules, in order: the root is missing; it is not a folder or cannot be read; it holds no
entry at all while the library holds videos (an unmounted disk's empty mount point); mediascan
wrote its marker file there (`LibraryStatus.marker`) and it is gone or names another library.
The marker decides "the same file system" the same way on every server (`st_dev` differs from
one machine to the next)."""

from __future__ import annotations

import contextlib
import errno
import os
import stat

from mediascan.v1 import scan_pb2

#: The file a library keeps at its root: the library's uid.
MARKER = ".mediascan-library"


def root_problem(library: scan_pb2.Library) -> str | None:
    """Why the library's root cannot be trusted now (the library is OFFLINE), or None."""
    root = library.root
    try:
        info = os.stat(root)
    except FileNotFoundError:
        return f"the root {root} is missing"
    except OSError as exc:
        return f"cannot reach the root {root}: {exc.strerror}"
    if not stat.S_ISDIR(info.st_mode):
        return f"the root {root} is not a folder any more"
    try:
        with os.scandir(root) as entries:
            empty = next(entries, None) is None
    except OSError as exc:
        return f"cannot read the root {root}: {exc.strerror}"
    count = library.status.video_count
    if empty and count:
        return (
            f"the root {root} is empty but the library holds {count} videos: a disk or share "
            "that is not mounted?"
        )
    if library.status.marker:
        try:
            with open(os.path.join(root, MARKER), encoding="utf-8") as file:
                held = file.read(200).strip()
        except FileNotFoundError:
            return (
                f"the marker file {MARKER} is gone from {root}: another file system is mounted "
                "there, or none"
            )
        except OSError as exc:
            return f"cannot read the marker file {MARKER} in {root}: {exc.strerror}"
        if held != library.uid:
            return (
                f"the marker file {MARKER} in {root} belongs to another library ({held[:40]!r}): "
                "another disk is mounted there"
            )
    return None


def write_marker(library: scan_pb2.Library) -> str | None:
    """Write the marker file (atomically); None once written, else why it could not be (a
    read-only share: the library then goes without)."""
    path = os.path.join(library.root, MARKER)
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as file:
            file.write(library.uid + "\n")
        os.replace(temporary, path)
    except OSError as exc:
        if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM, errno.ENOSPC):
            raise
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        return f"cannot write the marker file {path}: {exc.strerror}"
    return None
