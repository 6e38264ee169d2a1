"""Which file systems tell this machine about changes, and so which watch mode `AUTO` picks.

inotify reports what passes through this machine's own VFS. A file system whose files other
machines (or another layer) can change sends nothing for those changes: a film copied onto a NAS
from a laptop never raises an event on the server that mounts the NAS. `AUTO` therefore polls
on the types of `NO_EVENT_TYPES`, and on every FUSE type, and uses events everywhere else:

- network file systems: `nfs`, `nfs4` (NFS 2 to 4.2), `cifs`, `smb3`, `smbfs` (SMB), `9p`
  (also WSL 2's Windows drives and QEMU shares), `drvfs` (WSL 1), `afs`, `ceph`, `glusterfs`,
  `lustre`, `gpfs`, `beegfs`, `orangefs`, `ncpfs`, `coda`;
- cluster file systems on shared disks: `gfs2`, `ocfs2` (another node's writes send no event);
- host shares in a virtual machine: `virtiofs`, `vboxsf`, `vmhgfs`;
- FUSE: `fuse` and every `fuse.NAME` (sshfs, rclone, mergerfs, s3fs, glusterfs's client, ...):
  the daemon answers from a remote store or from other folders, which change without this VFS.
  `fuseblk` (and `fuseblk.NAME`) is not among them: it is a local disk (ntfs-3g, exfat-fuse)
  that only this machine writes, so events reach it.

The type is read from `/proc/self/mountinfo` (`mounts.py` parses it): the mount holding a path is
the deepest mount point that is the path or one of its folders, after symlinks are resolved; of
several mounts on one point the last hides the others.
"""

from __future__ import annotations

import enum
import os

from ..mounts import mount_entries, read_mountinfo
from ..roots import is_within

#: File-system types that send no inotify event for changes made elsewhere (besides FUSE's).
NO_EVENT_TYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "9p",
        "drvfs",
        "afs",
        "ceph",
        "glusterfs",
        "lustre",
        "gpfs",
        "beegfs",
        "orangefs",
        "ncpfs",
        "coda",
        "gfs2",
        "ocfs2",
        "virtiofs",
        "vboxsf",
        "vmhgfs",
    }
)


class WatchMode(enum.StrEnum):
    """How a library notices changes."""

    #: Not watched: only scans that are asked for.
    OFF = "OFF"
    #: The kernel's notifications (inotify).
    EVENTS = "EVENTS"
    #: Rescans at the library's poll interval.
    POLL = "POLL"
    #: POLL on a file system that sends no events here (`sends_no_events`), EVENTS elsewhere.
    AUTO = "AUTO"


def sends_no_events(fstype: str) -> bool:
    """Whether changes on a file system of this type can be made without an inotify event here."""
    return fstype in NO_EVENT_TYPES or fstype == "fuse" or fstype.startswith("fuse.")


def mount_type(path: str, mountinfo: str | None = None) -> str:
    """The type of the file system holding `path` ("" if no mount holds it, e.g. without
    /proc). It resolves symlinks, so it touches the file system: call it off the event loop.
    `mountinfo` is the text of a mountinfo file (this process's own by default)."""
    text = read_mountinfo() if mountinfo is None else mountinfo
    real = os.path.realpath(path)
    found, depth = "", -1
    for entry in mount_entries(text):
        if is_within(real, entry.point) and len(entry.point) >= depth:
            found, depth = entry.fstype, len(entry.point)
    return found


def mounts_without_events(path: str, mountinfo: str | None = None) -> list[str]:
    """The mount points strictly below `path` whose file systems send no events here (an NFS
    share mounted inside a library on a local disk): a watcher there sees only this machine's
    own changes, so they are to be polled even when the library runs on EVENTS."""
    text = read_mountinfo() if mountinfo is None else mountinfo
    real = os.path.realpath(path)
    last: dict[str, str] = {entry.point: entry.fstype for entry in mount_entries(text)}
    return sorted(
        point
        for point, fstype in last.items()
        if point != real and is_within(point, real) and sends_no_events(fstype)
    )


def events_reach_here(path: str, mountinfo: str | None = None) -> bool:
    """Whether inotify reports every change under `path` (see `sends_no_events`)."""
    return not sends_no_events(mount_type(path, mountinfo))


def effective_mode(mode: WatchMode, path: str, mountinfo: str | None = None) -> WatchMode:
    """The mode a library rooted at `path` runs in: `mode` itself, or for AUTO, POLL where
    events do not reach this machine and EVENTS elsewhere."""
    if mode is not WatchMode.AUTO:
        return mode
    return WatchMode.EVENTS if events_reach_here(path, mountinfo) else WatchMode.POLL
