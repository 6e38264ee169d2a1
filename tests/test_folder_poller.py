"""`FolderPoller` on real folders: the first poll is the baseline; later polls name the folders
whose video files changed, and the topmost of the folders that appeared or went away; files
that are not videos, and polls that find nothing, report nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mediascan.server.videonames import VIDEO_SUFFIXES
from mediascan.server.watching.poll import FolderPoller
from mediascan.server.watching.signals import Changed


def write(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def poller(root: Path, *, recursive: bool = True, follow: bool = False) -> FolderPoller:
    made = FolderPoller(
        (str(root),), recursive=recursive, follow_symlinks=follow, suffixes=VIDEO_SUFFIXES
    )
    assert made.poll() is None  # the baseline
    return made


def changed(folders: tuple[Path, ...] = (), trees: tuple[Path, ...] = ()) -> Changed:
    return Changed(
        folders=frozenset(map(str, folders)), trees=frozenset(str(tree) for tree in trees)
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    write(tmp_path / "lib" / "a.mp4")
    write(tmp_path / "lib" / "sub" / "b.mkv")
    write(tmp_path / "lib" / "sub" / "deep" / "c.webm")
    return tmp_path / "lib"


def test_nothing_changed_is_nothing(root: Path) -> None:
    polls = poller(root)
    assert polls.poll() is None
    assert polls.files == 3


def test_a_new_changed_or_removed_file_names_its_folder(root: Path) -> None:
    polls = poller(root)
    write(root / "sub" / "new.mp4")
    assert polls.poll() == changed(folders=(root / "sub",))
    write(root / "sub" / "deep" / "c.webm", b"longer")  # another size
    assert polls.poll() == changed(folders=(root / "sub" / "deep",))
    os.utime(root / "a.mp4", ns=(10**18, 10**18))  # another modification time
    assert polls.poll() == changed(folders=(root,))
    (root / "sub" / "b.mkv").unlink()
    assert polls.poll() == changed(folders=(root / "sub",))
    os.rename(root / "a.mp4", root / "sub" / "a.mp4")  # a move: both folders
    assert polls.poll() == changed(folders=(root, root / "sub"))


def test_a_new_tree_is_named_once_by_its_top(root: Path, tmp_path: Path) -> None:
    polls = poller(root)
    write(tmp_path / "staged" / "x" / "y" / "z.mp4")
    os.rename(tmp_path / "staged", root / "sub" / "new")
    assert polls.poll() == changed(trees=(root / "sub" / "new",))


def test_a_removed_folder_names_its_parent(root: Path) -> None:
    polls = poller(root)
    (root / "sub" / "deep" / "c.webm").unlink()
    (root / "sub" / "deep").rmdir()
    assert polls.poll() == changed(trees=(root / "sub" / "deep",))
    os.rename(root / "sub", root / "renamed")
    assert polls.poll() == changed(trees=(root / "sub", root / "renamed"))


def test_files_that_are_not_videos_are_not_changes(root: Path) -> None:
    polls = poller(root)
    write(root / "notes.txt")
    write(root / "sub" / "part.tmp")
    (root / ".hidden-thing").mkdir()  # a new folder is a change, even an empty one
    assert polls.poll() == changed(trees=(root / ".hidden-thing",))
    assert polls.poll() is None


def test_not_recursive_polls_the_root_alone(root: Path) -> None:
    polls = poller(root, recursive=False)
    write(root / "sub" / "deep" / "more.mp4")
    assert polls.poll() is None
    write(root / "top.mp4")
    assert polls.poll() == changed(folders=(root,))
    assert polls.files == 2


def test_links_are_followed_only_when_asked_and_loops_end(root: Path, tmp_path: Path) -> None:
    write(tmp_path / "elsewhere" / "d.mp4")
    (root / "link").symlink_to(tmp_path / "elsewhere")
    (root / "sub" / "loop").symlink_to(root)
    unfollowed = poller(root)
    followed = poller(root, follow=True)
    write(tmp_path / "elsewhere" / "e.mp4")
    assert unfollowed.poll() is None
    assert followed.poll() == changed(folders=(root / "link",))


def test_a_closed_poller_stops(root: Path) -> None:
    polls = poller(root)
    write(root / "new.mp4")
    polls.close()
    assert polls.poll() is None
