"""What a `FolderWatcher` tells its user: the values it yields, one class per kind."""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True, kw_only=True)
class Changed:
    """Folders that changed and have been quiet for the settle time since.

    `folders`: folders whose direct entries changed (a file or folder in them created, deleted,
    written and closed, modified, moved in or out, or its attributes changed); list each again.
    `trees`: folders that appeared (created, moved in, or uncovered by an unmount); walk each
    with everything below it. A folder within a tree of the same signal is not listed again.
    Either may name folders that are gone since (deleted, moved away): the events said so.
    """

    folders: frozenset[str] = frozenset()
    trees: frozenset[str] = frozenset()


@dataclasses.dataclass(frozen=True, kw_only=True)
class Overflowed:
    """The kernel's event queue overflowed and events were lost: anything under the root may
    have changed, so rescan it all. Watching goes on (the watcher has walked the tree again)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Blind:
    """Folders that have no watch, so changes in them are not seen: poll each of them whole (a
    blind folder is not entered, so nothing below it is watched either) until `Sighted`. Sent
    each time this set changes while it is not empty, whole;
    `reason` says why the latest ones could not be watched (the watch limit, permissions)."""

    folders: tuple[str, ...]
    reason: str


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sighted:
    """Every folder is watched again (the limit was raised, watches were freed, the folders went
    away). Those that were blind and are watched now come in a `Changed` after this, once: what
    changed in them after their last poll is not lost."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class RootLost:
    """The root was deleted, moved away or unmounted: the watcher stops (its iteration ends after
    this). `reason` is "deleted", "moved", "unmounted" or "watch removed" (the kernel dropped
    the root's watch for another reason). While the root itself is blind, its loss is not seen."""

    reason: str


#: Everything a watcher yields.
Signal = Changed | Overflowed | Blind | Sighted | RootLost
