"""ListDuplicates: groups of videos that share a content fingerprint (`fingerprint.py`), and,
on request, the whole-file hashes that confirm them.

Groups come from the store a page at a time, by fingerprint (keyset pages: a deep page costs
what the first does). Confirming reads every listed file of the page whole, in the
verification probers (`Verifier.content_hash`), so a confirmed page is small. A file is opened
for that the way a scan opens it: its folder must still be the one the library names (no
symbolic link on the way, inside the allowed roots), the file is opened relative to it without
following a link, must be a regular file of the recorded size, and its descriptor is what the
prober reads.
"""

from __future__ import annotations

import asyncio
import os
import stat

from mediascan.v1 import scan_pb2

from .engine.tokens import decode_duplicates_token, encode_duplicates_token
from .errors import InvalidArgument
from .probe import ProbeError
from .roots import DIR_FLAGS, AllowedRoots, opened_path
from .store import LibraryStore
from .verify import Verifier

#: Groups per page (default, maximum), without and with `confirm`.
DUPLICATES_PAGE = (50, 500)
CONFIRM_PAGE = (10, 50)
#: Files listed per group, at most (`file_count` counts them all).
FILES_PER_GROUP = 100
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


class Duplicates:
    """Answers ListDuplicates from the library (and the verification probers, to confirm)."""

    def __init__(self, store: LibraryStore, verifier: Verifier | None, roots: AllowedRoots) -> None:
        self._store = store
        self._verifier = verifier
        self._roots = roots

    async def list(
        self, request: scan_pb2.ListDuplicatesRequest, prefix: str
    ) -> scan_pb2.ListDuplicatesResponse:
        default, maximum = CONFIRM_PAGE if request.confirm else DUPLICATES_PAGE
        if request.page_size < 0:
            raise InvalidArgument("page_size", "must not be negative (0 means the default)")
        page_size = min(request.page_size or default, maximum)
        after = decode_duplicates_token(request.page_token, prefix)
        groups = await self._store.list_duplicates(
            prefix=prefix, after=after, limit=page_size + 1, files_per_group=FILES_PER_GROUP
        )
        token = ""
        if len(groups) > page_size:
            groups = groups[:page_size]
            token = encode_duplicates_token(groups[-1].fingerprint, prefix)
        if request.confirm:
            for group in groups:
                await self._confirm(group)
        return scan_pb2.ListDuplicatesResponse(groups=groups, next_page_token=token)

    async def _confirm(self, group: scan_pb2.DuplicateGroup) -> None:
        for file in group.files:
            try:
                file.content_hash = await self._content_hash(file.path, file.size_bytes)
            except (OSError, ProbeError) as exc:
                file.error = _reason(exc)
        hashes = {file.content_hash for file in group.files}
        group.confirmed = len(hashes) == 1 and "" not in hashes

    async def _content_hash(self, path: str, size: int) -> str:
        if self._verifier is None:
            raise ProbeError("unavailable", "this server cannot read files to confirm them")
        fd = await asyncio.to_thread(_open_file, path, size, self._roots)
        try:
            return await self._verifier.content_hash(fd, path, size)
        finally:
            os.close(fd)


def _open_file(path: str, size: int, roots: AllowedRoots) -> int:
    """Open the library's file at `path` as a scan would (see the module's docstring)."""
    folder, name = os.path.split(path)
    dir_fd = os.open(folder, DIR_FLAGS)
    try:
        real = opened_path(dir_fd)
        if real != folder or not roots.allows(real):
            raise OSError(0, "its folder is now a symbolic link or outside the allowed roots")
        fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size != size:
        os.close(fd)
        raise OSError(0, "the file changed since it was scanned: scan its folder again")
    return fd


def _reason(exc: OSError | ProbeError) -> str:
    if isinstance(exc, ProbeError):
        return exc.message
    if exc.errno == 0:
        return str(exc.strerror)
    return f"cannot read the file: {exc.strerror or exc}"
