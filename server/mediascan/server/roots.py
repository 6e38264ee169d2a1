"""The path policy, in one place: which folders a client may scan and what a scan may open.

- The allowed roots (`--allow-root`) are resolved once at start (`resolve_roots`); none set
  allows any folder.
- At submit time a folder is resolved (`..` and symbolic links) and checked against the roots
  before anything is said about its existence (`resolve_folder`), so that answers reveal
  nothing about paths outside them.
- At start time the scanned folder is opened once (`open_root`) and must still be the folder
  accepted at submit time: everything the walk reads is opened relative to that descriptor.
- Symbolic links: a walk opens every entry with `O_NOFOLLOW` unless the scan follows links
  (`nofollow`); when it does, what a link led to is checked against the roots once opened,
  before anything is read (`AllowedRoots.holds`).

Errors are the domain errors of `errors.py` (mapped to gRPC statuses in one place).
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable, Sequence

from .errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied, Unavailable

#: Echoed request text (paths, ids) is cut to this length in error messages, so that an error's
#: trailers stay far below the 8 KiB of metadata a default gRPC client accepts.
SHOWN = 160

#: Opening a folder to list it.
DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
#: Out of descriptors: the server's limit (EMFILE) or the system's (ENFILE).
TOO_MANY_FILES = frozenset({errno.EMFILE, errno.ENFILE})

_EUID = os.geteuid()


class RootError(ValueError):
    """An `--allow-root` that cannot work (configuration, not a request): the message names
    the flag."""


def shown(text: str) -> str:
    """`text` as quoted in an error message: long text keeps its start and its end."""
    if len(text) <= SHOWN:
        return text
    return f"{text[: SHOWN // 2]}…{text[-(SHOWN // 2 - 1) :]}"


def is_within(path: str, root: str) -> bool:
    """True if the resolved `path` is `root` or below it."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def nofollow(follow_symlinks: bool) -> int:
    """The open flag of a walk's entries: `O_NOFOLLOW` unless the scan follows links, so that
    an entry swapped for a link during the scan fails to open (ELOOP) instead of being
    followed."""
    return 0 if follow_symlinks else os.O_NOFOLLOW


def opened_path(fd: int) -> str:
    """The real path of what `fd` refers to, as the kernel names it ("" without /proc)."""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


class AllowedRoots:
    """The resolved allowed roots of a server; empty allows any folder."""

    __slots__ = ("paths",)

    def __init__(self, paths: Iterable[str] = ()) -> None:
        self.paths: tuple[str, ...] = tuple(paths)

    def __bool__(self) -> bool:
        return bool(self.paths)

    def allows(self, real: str) -> bool:
        """True if no roots are set or the resolved path lies within one."""
        return not self.paths or any(is_within(real, root) for root in self.paths)

    def holds(self, fd: int) -> bool:
        """True if what the open descriptor `fd` refers to lies within the roots (a followed
        link is checked by what it opened, not by any path a swap could change)."""
        return self.allows(opened_path(fd))


def resolve_roots(roots: Iterable[os.PathLike[str] | str]) -> AllowedRoots:
    """The `--allow-root` folders, resolved at start. Raises RootError."""
    resolved = []
    for root in roots:
        real = os.path.realpath(root)
        if not os.path.isdir(real):
            raise RootError(f"--allow-root {os.fspath(root)}: not an existing folder")
        resolved.append(real)
    return AllowedRoots(resolved)


# -- submit time --------------------------------------------------------------------------------


def resolve_folder(path: str, roots: Sequence[str] | AllowedRoots) -> str:
    """Resolve `..` and symlinks, check the allowed roots, then that it is a readable folder.

    The roots are checked before existence, so that the answers reveal nothing about paths
    outside them.

    The common case, a folder that opens, costs three system calls: the kernel resolves the
    path as it opens it, and /proc names what it opened (`os.path.realpath` would take an
    lstat per component). Anything else takes the general way below, which also finds the
    precise error."""
    allowed = roots if isinstance(roots, AllowedRoots) else AllowedRoots(roots)
    real = _opened_folder(path)
    if real is not None and allowed.allows(real):
        return real
    return _resolve_folder_slowly(path, allowed)


def _opened_folder(path: str) -> str | None:
    """The real path of `path` if it is a folder the server may list and enter, else None."""
    try:
        fd = os.open(path, DIR_FLAGS)
    except OSError:
        return None
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc
        return None
    finally:
        os.close(fd)
    if not real.startswith("/") or real.endswith(" (deleted)"):
        return None
    if _EUID != 0 and not os.access(real, os.X_OK):
        return None
    return real


def _resolve_folder_slowly(path: str, roots: AllowedRoots) -> str:
    raw = shown(path)
    real = _realpath(path, raw)
    if not roots.allows(real):
        raise PermissionDenied(
            f"{raw} is outside the folders this server may scan ({', '.join(roots.paths)}); "
            "scan a folder below one of them, or start the server with --allow-root",
            field="path",
            reason="PATH_OUTSIDE_ALLOWED_ROOTS",
        )
    try:
        mode = os.stat(real).st_mode
    except FileNotFoundError:
        raise NotFound(
            f"{raw} does not exist on the server", field="path", reason="PATH_NOT_FOUND"
        ) from None
    except PermissionError:
        raise FailedPrecondition(
            f"the server has no permission to open {raw}", field="path", reason="PATH_UNREADABLE"
        ) from None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise _name_too_long(raw) from None
        raise FailedPrecondition(
            f"cannot open {raw}: {exc.strerror}", field="path", reason="PATH_UNREADABLE"
        ) from None
    if not stat.S_ISDIR(mode):
        raise FailedPrecondition(
            f"{raw} is not a folder: give the folder that holds it",
            field="path",
            reason="PATH_NOT_A_FOLDER",
        )
    if not os.access(real, os.R_OK | os.X_OK):
        raise FailedPrecondition(
            f"the server has no permission to read the folder {raw}",
            field="path",
            reason="PATH_UNREADABLE",
        )
    return real


def _realpath(path: str, raw: str) -> str:
    """`os.path.realpath`, whose errors become statuses. Resolving may fail on a part of the path
    the server cannot read (`/proc/1/root`, `/proc/PID/cwd` of another process: EACCES in
    readlink), a name too long for the file system, or any other error of a component: no
    answer then says anything about what lies beyond that component."""
    try:
        return os.path.realpath(path)
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            raise _name_too_long(raw) from None
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise PermissionDenied(
                f"the server may not resolve {raw}: a part of it cannot be read "
                f"({exc.strerror}); give the real path of a folder below the allowed roots",
                field="path",
                reason="PATH_UNRESOLVABLE",
            ) from None
        raise FailedPrecondition(
            f"cannot resolve {raw}: {exc.strerror or exc}", field="path", reason="PATH_UNREADABLE"
        ) from None


def _name_too_long(raw: str) -> InvalidArgument:
    return InvalidArgument(
        "path",
        f"{raw} has a name or a resolved path too long for the file system (at most 255 "
        "bytes a name and 4,096 a path)",
    )


# -- start time ---------------------------------------------------------------------------------


def open_root(path: str) -> int:
    """Open the scanned folder, which must still be what was accepted at submit time: the
    walk reads everything relative to this descriptor."""
    try:
        fd = os.open(path, DIR_FLAGS)
    except FileNotFoundError:
        raise NotFound(f"{path} no longer exists") from None
    except NotADirectoryError:
        raise FailedPrecondition(f"{path} is no longer a folder") from None
    except OSError as exc:
        if exc.errno in TOO_MANY_FILES:
            raise Unavailable(
                f"cannot open {path}: {exc.strerror} (the server is at its limit of open "
                "files); retry later",
                reason="TOO_MANY_OPEN_FILES",
            ) from None
        raise FailedPrecondition(f"cannot read {path}: {exc.strerror}") from None
    if opened_path(fd) != path:
        os.close(fd)
        raise PermissionDenied(
            f"{path} changed into a symbolic link after the scan was accepted; submit the "
            "scan again with the real folder"
        )
    return fd


MAX_PATH = 4096


def check_path_text(field: str, path: str) -> None:
    """A path field's text: present, absolute, no NUL, at most MAX_PATH characters."""
    if not path:
        raise InvalidArgument(
            field, "required: the absolute path of a folder on the server, e.g. /media/videos"
        )
    if "\x00" in path:
        raise InvalidArgument(field, "contains a NUL character, which no path can hold")
    if len(path) > MAX_PATH:
        raise InvalidArgument(field, f"longer than {MAX_PATH} characters")
    if not os.path.isabs(path):
        raise InvalidArgument(
            field,
            f"must be an absolute path (starting with /), got {shown(path)!r}: the server does "
            "not know the client's working folder",
        )
