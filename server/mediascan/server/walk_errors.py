"""What a walk reports about an entry it could not handle (`WalkError`), and why: the messages
of swapped, vanished, unreadable and odd entries, each with its status code."""

from __future__ import annotations

import dataclasses
import errno
import stat

from .errors import Code
from .roots import TOO_MANY_FILES


@dataclasses.dataclass(frozen=True, slots=True)
class WalkError:
    """An entry the walk could not handle. `complete`: the folder's listing is still complete
    (the entry is surely not a video the library could hold), so removals there stay safe."""

    path: str
    code: Code
    message: str
    complete: bool = False
    #: A folder (unreadable, or skipped as already scanned), not a file: not counted as failed.
    folder: bool = False


OUTSIDE = "not followed: the symbolic link leads outside the allowed roots"
SWAPPED = "was replaced by a symbolic link during the scan; not followed"

#: A folder on a pseudo file system (proc, sysfs, ...) met below the scanned folder.
PSEUDO = "skipped: a {kind} file system (not files: the kernel's own); scan it by name to enter it"


def outside_roots(path: str, *, folder: bool = False) -> WalkError:
    """A followed link that leads outside the allowed roots."""
    return WalkError(path, Code.PERMISSION_DENIED, OUTSIDE, complete=True, folder=folder)


def already_scanned(path: str) -> WalkError:
    """A followed link to a folder the walk entered already."""
    return WalkError(
        path,
        Code.FAILED_PRECONDITION,
        "skipped: this folder was already scanned (a symbolic link loop, or a "
        "second link to the same folder)",
        complete=True,
        folder=True,
    )


def pseudo_file_system(path: str, kind: str) -> WalkError:
    """A mount point of a pseudo file system below the scanned folder: not entered."""
    return WalkError(
        path,
        Code.FAILED_PRECONDITION,
        PSEUDO.format(kind=kind),
        complete=True,
        folder=True,
    )


def not_utf8(path: str) -> WalkError:
    return WalkError(
        path,
        Code.INVALID_ARGUMENT,
        "a video whose name is not valid UTF-8 is not scanned; rename it to scan it",
        complete=True,
    )


def kind_of(mode: int) -> str:
    """Why an entry with a video extension is not a file to probe."""
    for test, kind in (
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISDIR, "a folder"),
    ):
        if test(mode):
            return f"not a regular file: {kind}"
    return "not a regular file"


def not_regular(path: str, mode: int) -> WalkError | None:
    """A file opened to probe that is not a regular file: it was swapped during the scan."""
    if stat.S_ISREG(mode):
        return None
    return WalkError(
        path,
        Code.FAILED_PRECONDITION,
        f"was replaced during the scan by something that is {kind_of(mode)[4:]}; not probed",
        complete=True,
    )


def file_error(path: str, exc: OSError, *, follow: bool) -> WalkError:
    """Why a file the walk listed could not be opened to probe."""
    if exc.errno == errno.ELOOP:
        message = "a symbolic link loop" if follow else SWAPPED
        return WalkError(path, Code.FAILED_PRECONDITION, message, complete=True)
    if isinstance(exc, FileNotFoundError):
        return WalkError(path, Code.NOT_FOUND, "the file vanished before it could be probed")
    return WalkError(path, _code_of(exc), f"cannot open the file: {exc.strerror or exc}")


def folder_error(folder: str, exc: OSError, *, follow: bool = True) -> WalkError:
    if not follow and exc.errno == errno.ELOOP:
        return WalkError(folder, Code.FAILED_PRECONDITION, f"the folder {SWAPPED}", folder=True)
    if exc.errno == errno.ENOTDIR:
        return WalkError(
            folder,
            Code.FAILED_PRECONDITION,
            "the folder was replaced by a file during the scan; not scanned",
            folder=True,
        )
    if isinstance(exc, FileNotFoundError):
        return WalkError(folder, Code.NOT_FOUND, "the folder vanished during the scan", folder=True)
    message = f"cannot read folder: {exc.strerror or exc}"
    return WalkError(folder, _code_of(exc), message, folder=True)


def _code_of(exc: OSError) -> Code:
    """The code of an entry that could not be opened for a reason other than those above."""
    if isinstance(exc, PermissionError):
        return Code.PERMISSION_DENIED
    if exc.errno in TOO_MANY_FILES:
        return Code.RESOURCE_EXHAUSTED
    return Code.UNAVAILABLE
