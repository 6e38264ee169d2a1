"""`reopen`: a server probing another server's batch opens each walked file again from its own
side, with the walk's rules: no symbolic link anywhere below the scanned folder unless the scan
follows links (then only into the allowed roots), a regular file, and the size and time the walk
saw. Real files, links and swaps on disk."""

from __future__ import annotations

import os
from pathlib import Path

from mediascan.server.errors import Code
from mediascan.server.reopen import reopen
from mediascan.server.roots import AllowedRoots
from mediascan.server.store.probe_queue import WalkedFile
from mediascan.server.walk_errors import WalkError


def walked(path: Path) -> WalkedFile:
    info = path.stat()
    return WalkedFile(str(path), info.st_size, info.st_mtime_ns, 1)


def opened(result: int | WalkError) -> int:
    assert isinstance(result, int), result
    return result


def test_a_walked_file_opens_again_as_the_walk_saw_it(tmp_path: Path) -> None:
    video = tmp_path / "a" / "b" / "v.mp4"
    video.parent.mkdir(parents=True)
    video.write_bytes(b"x" * 100)
    fd = opened(reopen(walked(video), str(tmp_path), follow_symlinks=False, roots=AllowedRoots()))
    try:
        assert os.readlink(f"/proc/self/fd/{fd}") == str(video)
        assert os.read(fd, 10) == b"x" * 10
    finally:
        os.close(fd)


def test_a_folder_swapped_for_a_link_is_refused_without_following_it(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "a").mkdir(parents=True)
    (outside / "a").mkdir(parents=True)
    video = root / "a" / "v.mp4"
    video.write_bytes(b"x" * 100)
    seen = walked(video)
    (outside / "a" / "v.mp4").write_bytes(b"y" * 100)
    os.utime(outside / "a" / "v.mp4", ns=(seen.mtime_ns, seen.mtime_ns))
    (root / "a" / "v.mp4").unlink()
    (root / "a").rmdir()
    (root / "a").symlink_to(outside / "a")  # the same name, size and time, elsewhere
    result = reopen(seen, str(root), follow_symlinks=False, roots=AllowedRoots())
    assert isinstance(result, WalkError) and "symbolic link" in result.message
    assert result.code == Code.FAILED_PRECONDITION


def test_a_file_swapped_for_a_link_is_refused(tmp_path: Path) -> None:
    video, elsewhere = tmp_path / "v.mp4", tmp_path / "other.bin"
    video.write_bytes(b"x" * 100)
    seen = walked(video)
    elsewhere.write_bytes(b"x" * 100)
    video.unlink()
    video.symlink_to(elsewhere)
    result = reopen(seen, str(tmp_path), follow_symlinks=False, roots=AllowedRoots())
    assert isinstance(result, WalkError) and "symbolic link" in result.message


def test_a_followed_link_must_lead_into_the_allowed_roots(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    target = outside / "v.mp4"
    target.write_bytes(b"x" * 100)
    (root / "v.mp4").symlink_to(target)
    seen = walked(root / "v.mp4")
    roots = AllowedRoots([str(root)])
    result = reopen(seen, str(root), follow_symlinks=True, roots=roots)
    assert isinstance(result, WalkError) and result.code == Code.PERMISSION_DENIED
    inside = opened(reopen(seen, str(root), follow_symlinks=True, roots=AllowedRoots()))
    os.close(inside)


def test_a_file_changed_since_the_walk_is_not_trusted(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x" * 100)
    seen = walked(video)
    with video.open("ab") as file:
        file.write(b"more")
    result = reopen(seen, str(tmp_path), follow_symlinks=False, roots=AllowedRoots())
    assert isinstance(result, WalkError) and result.code == Code.ABORTED
    assert "changed since the walk" in result.message
    video.unlink()
    gone = reopen(seen, str(tmp_path), follow_symlinks=False, roots=AllowedRoots())
    assert isinstance(gone, WalkError) and gone.code == Code.NOT_FOUND


def test_a_fifo_in_place_of_the_file_is_refused_without_blocking(tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x" * 100)
    seen = walked(video)
    video.unlink()
    os.mkfifo(video)
    result = reopen(seen, str(tmp_path), follow_symlinks=False, roots=AllowedRoots())
    assert isinstance(result, WalkError) and "FIFO" in result.message
