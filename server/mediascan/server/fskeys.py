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
import socket

from .mounts import mount_entries, read_mountinfo
from .roots import is_within


class DeviceKeys:
    """The mounts of this process as one scan starts, by device number."""

    def __init__(self, mountinfo: str = "") -> None:
        #: (major, minor) -> [(mount point, key)], longest mount point first.
        self._mounts: dict[tuple[int, int], list[tuple[str, int]]] = {}
        for mount in mount_entries(mountinfo):
            key = _key(f"{mount.fstype}\0{mount.source}\0{mount.root}\0{mount.point}")
            self._mounts.setdefault(mount.device, []).append((mount.point, key))
        for mounts in self._mounts.values():
            mounts.sort(key=lambda mount: len(mount[0]), reverse=True)

    @classmethod
    def read(cls) -> DeviceKeys:
        """This process's mounts now (none known without /proc)."""
        return cls(read_mountinfo())

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


def _key(text: str) -> int:
    digest = hashlib.blake2b(text.encode("utf-8", "surrogateescape"), digest_size=8).digest()
    return (int.from_bytes(digest, "big") >> 1) or 1
