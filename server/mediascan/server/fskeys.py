"""Keys of file systems that are the same on every server, for the removal rule of a shared
library.

A rescan removes a video it did not meet only if the video was stored on the file system that
its folder is on now: an unmounted disk leaves its mount point, an empty folder of another file
system, and that must wipe nothing. On one machine the file system is `st_dev`. Servers sharing
a PostgreSQL database cannot use it: one network share has a different `st_dev` on each of them.
There a file system is named by the mount it is reached through, as `/proc/self/mountinfo`
says: its type, its source (`nas:/export/media`, `/dev/sdb1`), the folder of the file system
it shows and its mount point. Mounted the same way at the same path on every server (the rule
for shared mounts), one share has one key everywhere; an unmounted disk's mount point is on the
file system above it, with another key. The key is a positive 63-bit number (0 means "not
known": no objection to a removal), stored where SQLite stores `st_dev`."""

from __future__ import annotations

import hashlib
import os
import re
import socket

from .roots import is_within

_MOUNTINFO = "/proc/self/mountinfo"
_OCTAL = re.compile(r"\\([0-7]{3})")


class DeviceKeys:
    """The mounts of this process as one scan starts, by device number."""

    def __init__(self, mountinfo: str = "") -> None:
        #: (major, minor) -> [(mount point, key)], longest mount point first.
        self._mounts: dict[tuple[int, int], list[tuple[str, int]]] = {}
        for line in mountinfo.splitlines():
            parsed = _parse(line)
            if parsed is not None:
                device, mount_point, key = parsed
                self._mounts.setdefault(device, []).append((mount_point, key))
        for mounts in self._mounts.values():
            mounts.sort(key=lambda mount: len(mount[0]), reverse=True)

    @classmethod
    def read(cls) -> DeviceKeys:
        """This process's mounts now (none known without /proc)."""
        try:
            with open(_MOUNTINFO, encoding="utf-8", errors="surrogateescape") as file:
                return cls(file.read())
        except OSError:
            return cls()

    def key(self, dev: int, path: str) -> int:
        """The key of the file system of `path`, whose `st_dev` is `dev`: the mount of that
        device whose mount point holds `path` (the deepest), else its only or first mount;
        for a device no mount names, a key of this machine's alone."""
        mounts = self._mounts.get((os.major(dev), os.minor(dev)))
        if not mounts:
            return _key(f"device {dev} on {socket.gethostname()}")
        if len(mounts) > 1:
            for mount_point, key in mounts:
                if is_within(path, mount_point):
                    return key
        return mounts[0][1]


def _parse(line: str) -> tuple[tuple[int, int], str, int] | None:
    """(device, mount point, key) of one mountinfo line: `id parent major:minor root
    mount-point options [optional fields] - type source super-options`."""
    fields = line.split()
    try:
        separator = fields.index("-", 6)
        major, minor = (int(part) for part in fields[2].split(":"))
        root, mount_point = _unescape(fields[3]), _unescape(fields[4])
        fs_type, source = fields[separator + 1], _unescape(fields[separator + 2])
    except (ValueError, IndexError):
        return None
    return (major, minor), mount_point, _key(f"{fs_type}\0{source}\0{root}\0{mount_point}")


def _unescape(field: str) -> str:
    """mountinfo writes a space, tab, newline and backslash in a name as octal escapes."""
    return _OCTAL.sub(lambda match: chr(int(match.group(1), 8)), field)


def _key(text: str) -> int:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 1) or 1
