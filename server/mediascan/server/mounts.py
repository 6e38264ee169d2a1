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
from typing import NamedTuple

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


class MountEntry(NamedTuple):
    """One line of a mountinfo file: `id parent major:minor root mount-point options [optional
    fields] - type source super-options`."""

    #: (major, minor) of the file system's device (`st_dev` of its files).
    device: tuple[int, int]
    #: The folder of the file system that the mount shows ("/" for all of it).
    root: str
    #: Where it is mounted.
    point: str
    #: The file-system type (`ext4`, `nfs4`, `fuse.sshfs`, ...).
    fstype: str
    #: What is mounted (`/dev/sdb1`, `nas:/export/media`, ...).
    source: str


def mount_entries(text: str) -> list[MountEntry]:
    """The mounts of a mountinfo file's text, in its order (a later mount on a point hides the
    earlier ones); malformed lines are left out."""
    entries: list[MountEntry] = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            separator = fields.index("-", 6)
            major, minor = (int(part) for part in fields[2].split(":"))
            fstype, source = fields[separator + 1], fields[separator + 2]
        except (ValueError, IndexError):
            continue
        point, root = _unescape(fields[4]), _unescape(fields[3])
        entries.append(MountEntry((major, minor), root, point, fstype, _unescape(source)))
    return entries


def read_mountinfo(path: str = MOUNTINFO) -> str:
    """The text of this process's mount table ("" without /proc)."""
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as file:
            return file.read()
    except OSError:
        return ""


def parse_mountinfo(text: str) -> dict[str, str]:
    """Mount point -> file-system type, from the text of a mountinfo file (the last mount on a
    point wins: it hides the others)."""
    return {entry.point: entry.fstype for entry in mount_entries(text)}


class Mounts:
    """The mount table as one scan sees it: read lazily, once, and again only when a mount
    point is missing (mounted after it was read)."""

    def __init__(self, path: str = MOUNTINFO) -> None:
        self._path = path
        self._types: dict[str, str] | None = None
        self._reread = False  # read again once (a mount made after the first read)

    def _read(self) -> dict[str, str]:
        return parse_mountinfo(read_mountinfo(self._path))  # no /proc: nothing is pseudo

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
