"""Entries swapped for symbolic links while a scan runs never lead the server outside the allowed
roots (issue 11, item 2).

A swapper thread keeps replacing folders and files of the scanned tree with links to a folder
outside the roots (and back) while full scans of thousands of files run. The outside videos have
a resolution, a duration and a size no video of the tree has, so any library row holding their
metadata was read outside the roots. With `follow_symlinks` on, the links are followed only when
what was opened lies inside the roots; here every link leads outside, so none is followed."""

from __future__ import annotations

import contextlib
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from _library_helpers import (
    QUICK_STOP,
    SUCCEEDED,
    errors_by_path,
    get_job,
    library,
    real,
    scan,
    scratch_folder,
    tiny_video,
)
from _robust import record_figures

FOLDERS = 10
FILES_PER_FOLDER = 400
ROUNDS = 4
#: The outside videos: a resolution and duration that no video of the tree has.
OUTSIDE_SIZE = {"width": 96, "height": 80, "seconds": 0.4}


class Swapper(threading.Thread):
    """Replaces folders and files with links to `outside` and back, as fast as it can, until
    stopped; `restore()` then puts every real entry back."""

    def __init__(self, folders: list[Path], files: list[Path], outside: Path, stash: Path):
        super().__init__(daemon=True)
        self.folders = folders
        self.files = files
        self.outside = outside
        self.secret = outside / "SECRET.mp4"
        self.stash = stash
        self.swapped_folders: set[Path] = set()
        self.swapped_files: set[Path] = set()
        self.swaps = 0
        self.stopped = threading.Event()
        self.failure: BaseException | None = None
        self.random = random.Random(11)

    def run(self) -> None:
        try:
            while not self.stopped.is_set():
                if self.random.random() < 0.05:
                    self.toggle_folder(self.random.choice(self.folders))
                else:
                    self.toggle_file(self.random.choice(self.files))
        except BaseException as exc:  # reported by the test
            self.failure = exc

    def toggle_folder(self, folder: Path) -> None:
        kept = self.stash / folder.name
        if folder in self.swapped_folders:
            folder.unlink()
            kept.rename(folder)
            self.swapped_folders.discard(folder)
        else:
            folder.rename(kept)
            folder.symlink_to(self.outside, target_is_directory=True)
            self.swapped_folders.add(folder)
            self.swaps += 1

    def toggle_file(self, file: Path) -> None:
        if file.parent in self.swapped_folders:
            return  # its folder is stashed: the file is not where the walk can meet it
        temporary = file.with_name(file.name + ".swap")
        if file in self.swapped_files:
            os.link(self.stash / "pristine" / file.parent.name / file.name, temporary)
            self.swapped_files.discard(file)
        else:
            temporary.symlink_to(self.secret)
            self.swapped_files.add(file)
            self.swaps += 1
        os.replace(temporary, file)

    def restore(self) -> None:
        for folder in list(self.swapped_folders):
            self.toggle_folder(folder)
        for file in list(self.swapped_files):
            self.toggle_file(file)


@contextlib.contextmanager
def swapping(swapper: Swapper) -> Iterator[Swapper]:
    swapper.start()
    try:
        yield swapper
    finally:
        swapper.stopped.set()
        swapper.join(30)
        swapper.restore()
    if swapper.failure is not None:
        raise swapper.failure


def build_tree(base: Path) -> tuple[Path, Path, list[Path], list[Path], Path]:
    """allowed/lib: FOLDERS folders of FILES_PER_FOLDER videos; outside: SECRET.mp4 and more
    videos of another kind; stash: where swapped-out folders wait, and a pristine hard link of
    every file."""
    allowed, outside, stash = base / "allowed", base / "outside", base / "stash"
    lib = allowed / "lib"
    seed = tiny_video(base / "seed.mp4")
    tiny_video(outside / "SECRET.mp4", **OUTSIDE_SIZE)
    for index in range(FILES_PER_FOLDER):
        os.link(outside / "SECRET.mp4", outside / f"v{index:03d}.mp4")  # the names of the tree
    folders, files = [], []
    for folder_index in range(FOLDERS):
        folder = lib / f"d{folder_index}"
        pristine = stash / "pristine" / folder.name
        folder.mkdir(parents=True)
        pristine.mkdir(parents=True)
        folders.append(folder)
        for index in range(FILES_PER_FOLDER):
            file = folder / f"v{index:03d}.mp4"
            os.link(seed, file)
            os.link(seed, pristine / file.name)
            files.append(file)
    return allowed, lib, folders, files, outside


def from_outside(rows: dict[str, tuple[Any, ...]], outside_size: int) -> list[str]:
    """Library rows with the size, duration or resolution of an outside video."""
    return [
        path
        for path, row in rows.items()
        if row[0] == outside_size or row[3] >= 400_000_000 or (row[5], row[6]) == (96, 80)
    ]


@pytest.mark.slow
@pytest.mark.timeout(600)
@pytest.mark.parametrize("follow", [False, True], ids=["links-off", "links-on"])
async def test_entries_swapped_for_links_mid_scan_never_reach_outside_the_roots(
    make_server: Any, connect: Any, tmp_path: Path, follow: bool
) -> None:
    with scratch_folder(tmp_path) as base:
        allowed, lib, folders, files, outside = build_tree(base)
        outside_size = (outside / "SECRET.mp4").stat().st_size
        server = await make_server(allow_roots=(allowed,), **QUICK_STOP)
        stub = await connect(server.address)
        swaps = leaked = scanned = 0
        reported: dict[str, int] = {}
        for _ in range(ROUNDS):
            swapper = Swapper(folders, files, outside, base / "stash")
            with swapping(swapper):
                job = await scan(stub, lib, full=True, follow_symlinks=follow, timeout=240)
            assert job.state == SUCCEEDED, job.error
            swaps += swapper.swaps
            scanned += job.result.files_total
            leaked += len(from_outside(await library(stub, real(lib)), outside_size))
            for code, _ in errors_by_path(job).values():
                reported[code.name] = reported.get(code.name, 0) + 1
        assert (await get_job(stub, job.job_id)).state == SUCCEEDED  # the server still answers
        record_figures(
            "swapped_entries",
            follow_symlinks=follow,
            rounds=ROUNDS,
            files=FOLDERS * FILES_PER_FOLDER,
            files_scanned=scanned,
            swaps=swaps,
            rows_from_outside=leaked,
            file_errors=reported,
        )
        assert swaps > ROUNDS * 10, swaps  # the swapper really ran during the scans
        assert leaked == 0, f"{leaked} library rows were read outside the allowed roots"
        assert not (set(reported) - {"FAILED_PRECONDITION", "NOT_FOUND", "PERMISSION_DENIED"}), (
            reported
        )
