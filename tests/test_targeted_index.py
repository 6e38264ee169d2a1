"""A targeted rescan (a library's watch saw some folders change) reads the library's index of
its target folders and trees only, not of the whole library: what it compares is below them."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from _library_helpers import video_row

from mediascan.server.jobs import ScanSpec
from mediascan.server.scanner import library_index
from mediascan.server.store import SqliteStore, library_key_path
from mediascan.server.targets import MAX_INDEX_READS, index_tops

ROOT = "/lib"
PATHS = (
    "/lib/top.mp4",
    "/lib/a/one.mp4",
    "/lib/a/deep/two.mp4",
    "/lib/a b/three.mp4",  # sorts between /lib/a and /lib/a/...
    "/lib/a-b/four.mp4",
    "/lib/c/five.mp4",
    "/lib/c/d/six.mp4",
)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "library.db")
    await store.open()
    try:
        await store.upsert_videos([video_row(path, size=100 + n) for n, path in enumerate(PATHS)])
        yield store
    finally:
        await store.close()


def spec(*, folders: tuple[str, ...] = (), trees: tuple[str, ...] = ()) -> ScanSpec:
    return ScanSpec(
        path=ROOT,
        recursive=True,
        follow_symlinks=False,
        timeout=60.0,
        priority=0,
        full=False,
        folders=folders,
        trees=trees,
    )


async def indexed(store: SqliteStore, scan: ScanSpec) -> set[str]:
    return {library_key_path(key) for key in (await library_index(store, scan)).keys}


async def test_a_targeted_rescan_reads_the_index_below_its_targets_only(
    store: SqliteStore,
) -> None:
    # A target folder's index goes to any depth (a subfolder gone from it loses its videos);
    # a tree's too; a target inside another is read once; nothing else is read.
    got = await indexed(store, spec(folders=("/lib/a", "/lib/a/deep"), trees=("/lib/c/d",)))
    assert got == {"/lib/a/one.mp4", "/lib/a/deep/two.mp4", "/lib/c/d/six.mp4"}
    assert await indexed(store, spec(trees=("/lib/a b",))) == {"/lib/a b/three.mp4"}
    # The library's root as a target, or no targets: the whole index.
    assert await indexed(store, spec(folders=("/lib", "/lib/c"))) == set(PATHS)
    assert await indexed(store, spec()) == set(PATHS)
    whole = dataclasses.replace(spec(folders=("/lib/c",)), recursive=False)
    assert await indexed(store, whole) == {"/lib/top.mp4"}  # a non-recursive scan: its own


def test_index_tops_keeps_the_topmost_targets_and_gives_up_past_its_cap() -> None:
    assert index_tops(ROOT, ["/lib/a", "/lib/a/deep", "/lib/a b"], ["/lib/a-b", "/lib/a/x/"]) == [
        "/lib/a",
        "/lib/a b",
        "/lib/a-b",
    ]
    assert index_tops(ROOT, ["/lib/a"], ["/lib"]) is None
    assert index_tops("/lib/", ["/lib/a", "/lib/"], []) is None
    # A target outside the root (none is made so) reads nothing of another library.
    assert index_tops(ROOT, ["/lib/a", "/other/b", "/library"], []) == ["/lib/a"]
    assert index_tops("/", ["/x/y", "/x"], []) == ["/x"]
    assert index_tops(ROOT, [], []) is None
    many = [f"/lib/f{n}" for n in range(MAX_INDEX_READS + 1)]
    assert index_tops(ROOT, many, []) is None
    assert index_tops(ROOT, many[:-1], []) == sorted(many[:-1])
