"""Pseudo file systems a walk does not enter: `/proc`, `/sys`, `/dev` and the like hold the
kernel's own objects, not files (reading some of them blocks or never ends).

A walk meets a mount point when a subfolder is on another device than its parent; it then looks
the folder up in `/proc/self/mountinfo` (read once per scan, again only when a mount point is
missing from it) and skips it if its file-system type is one of `PSEUDO_TYPES`. The type decides,
not the path: a `tmpfs` (e.g. `/dev/shm`, `/run`) is a real file system and is walked, a `proc`
mounted anywhere is not. The scanned folder itself is always walked, whatever it is on.
"""

from __future__ import annotations

import os

#: File-system types that are not files (`fstype` of /proc/self/mountinfo).
PSEUDO_TYPES = frozenset(
    {
        "proc",
        "sysfs",
        "devtmpfs",
        "devpts",
        "cgroup",
        "cgroup2",
        "securityfs",
        "debugfs",
        "tracefs",
        "pstore",
        "bpf",
        "configfs",
        "fusectl",
        "mqueue",
        "hugetlbfs",
        "binfmt_misc",
        "autofs",
        "efivarfs",
        "selinuxfs",
        "rpc_pipefs",
        "nsfs",
    }
)

MOUNTINFO = "/proc/self/mountinfo"


def _unescape(field: str) -> str:
    r"""A mountinfo path: space, tab, newline and backslash are written as octal (`\040`)."""
    if "\\" not in field:
        return field
    raw = field.encode("utf-8", "surrogateescape")
    out = bytearray()
    index = 0
    while index < len(raw):
        if raw[index : index + 1] == b"\\" and raw[index + 1 : index + 4].isdigit():
            out.append(int(raw[index + 1 : index + 4], 8))
            index += 4
        else:
            out.append(raw[index])
            index += 1
    return os.fsdecode(bytes(out))


def parse_mountinfo(text: str) -> dict[str, str]:
    """Mount point -> file-system type, from the text of a mountinfo file (the last mount on a
    point wins: it hides the others)."""
    types: dict[str, str] = {}
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            separator = fields.index("-", 6)
            point, fstype = fields[4], fields[separator + 1]
        except (ValueError, IndexError):
            continue
        types[_unescape(point)] = fstype
    return types


class Mounts:
    """The mount table as one scan sees it: read lazily, once, and again only when a mount
    point is missing (mounted after it was read)."""

    def __init__(self, path: str = MOUNTINFO) -> None:
        self._path = path
        self._types: dict[str, str] | None = None
        self._reread = False  # read again once (a mount made after the first read)

    def _read(self) -> dict[str, str]:
        try:
            with open(self._path, encoding="utf-8", errors="surrogateescape") as file:
                return parse_mountinfo(file.read())
        except OSError:
            return {}  # no /proc: nothing is known to be pseudo

    def fstype(self, point: str) -> str:
        """The file-system type mounted on `point` ("" if it is not a mount point)."""
        if self._types is None:
            self._types = self._read()
        elif point not in self._types and not self._reread:
            self._reread = True  # once: a folder on a device of its own need not be a mount
            self._types = self._read()
        return self._types.get(point, "")

    def pseudo(self, point: str) -> str:
        """The type of the pseudo file system mounted on `point`, or "" for anything else."""
        fstype = self.fstype(point)
        return fstype if fstype in PSEUDO_TYPES else ""
