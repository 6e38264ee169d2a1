"""Opening a file that another server's walk found, from this server's side, by its path.

A descriptor cannot cross machines, so a server probing a batch of another server's scan opens
each file itself, with the rules the walk follows (`walker.py`): unless the scan follows
symbolic links, every folder below the scanned one and the file are opened `O_NOFOLLOW`,
each relative to its parent's descriptor, from the scanned folder (which must be a real folder
here: the path accepted at submit time is resolved); a scan that follows links has what it
opened checked against the allowed roots. The file must be a regular file with the size and
modification time the walk saw, or the probe's result is not trusted (the file changed since,
and the next scan probes it)."""

from __future__ import annotations

import contextlib
import errno
import os

from .errors import Code
from .roots import DIR_FLAGS, AllowedRoots, opened_path
from .store.probe_queue import WalkedFile
from .walk_errors import WalkError, file_error, not_regular, outside_roots

#: The flags a walk opens a file to probe with (`walker.py`).
FILE_FLAGS = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC

CHANGED = "changed since the walk found it (size or modification time); the next scan probes it"


def reopen(
    walked: WalkedFile, root: str, *, follow_symlinks: bool, roots: AllowedRoots
) -> int | WalkError:
    """An open descriptor of the walked file (the caller closes it), or why there is none."""
    try:
        fd = _open_followed(walked.path) if follow_symlinks else _open_below(root, walked.path)
    except OSError as exc:
        return file_error(walked.path, exc, follow=follow_symlinks)
    try:
        info = os.fstat(fd)
        problem = not_regular(walked.path, info.st_mode)
        if problem is None and follow_symlinks and roots and not roots.holds(fd):
            problem = outside_roots(walked.path)
        if problem is None and (info.st_size, info.st_mtime_ns) != (walked.size, walked.mtime_ns):
            problem = WalkError(walked.path, Code.ABORTED, CHANGED)
    except OSError as exc:
        problem = file_error(walked.path, exc, follow=follow_symlinks)
    if problem is not None:
        os.close(fd)
        return problem
    return fd


def _open_followed(path: str) -> int:
    return os.open(path, FILE_FLAGS)


def _open_below(root: str, path: str) -> int:
    """Open `path` from the folder `root` one name at a time, none of them a link."""
    relative = os.path.relpath(path, root)
    if relative.startswith(os.pardir) or os.path.isabs(relative):
        raise OSError(errno.EXDEV, f"not below the scanned folder {root}")
    names = relative.split(os.sep)
    folder = os.open(root, DIR_FLAGS)
    try:
        if opened_path(folder) != root:  # the scanned folder became a link
            raise OSError(errno.ELOOP, os.strerror(errno.ELOOP))  # reported as a swap
        for name in names[:-1]:
            try:
                inner = os.open(name, DIR_FLAGS | os.O_NOFOLLOW, dir_fd=folder)
            except NotADirectoryError:  # a link (or a file) where the walk met a folder
                raise OSError(errno.ELOOP, os.strerror(errno.ELOOP)) from None
            os.close(folder)
            folder = inner
        return os.open(names[-1], FILE_FLAGS | os.O_NOFOLLOW, dir_fd=folder)
    finally:
        with contextlib.suppress(OSError):
            os.close(folder)
