"""Watching libraries: which file systems send events (`fstypes`) and a recursive inotify
folder watcher that reports settled changes, overflows and blind folders (`inotify`)."""

from .fstypes import (
    WatchMode,
    effective_mode,
    events_reach_here,
    mount_type,
    mounts_without_events,
)
from .inotify import FolderWatcher
from .signals import Blind, Changed, Overflowed, RootLost, Sighted, Signal

__all__ = [
    "Blind",
    "Changed",
    "FolderWatcher",
    "Overflowed",
    "RootLost",
    "Sighted",
    "Signal",
    "WatchMode",
    "effective_mode",
    "events_reach_here",
    "mount_type",
    "mounts_without_events",
]
