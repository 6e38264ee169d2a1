"""Odd file systems (issue 3, section 3): FIFOs, sockets, devices, dangling links and link loops
with a video extension, folders reached twice through links, names with unicode, spaces and
newlines, a file that vanishes mid-scan, and a scan root swapped for a symbolic link between the
submit and the start of the job."""

from __future__ import annotations

import os
import socket
import stat
from pathlib import Path
from typing import Any

import grpc
import pytest
from _library_helpers import (
    CANCELLED,
    FAILED,
    HANG_MARK,
    LONG_PROBE_TIMEOUT,
    QUICK_STOP,
    SHORT_PROBE_TIMEOUT,
    SUCCEEDED,
    can_drop_file_permission_bypass,
    cancel,
    code_of,
    counts,
    errors_by_path,
    library,
    progress_of,
    real,
    scan,
    set_fault,
    start_hung_blocker,
    submit,
    tiny_video,
    unprivileged_server,
)

from mediascan.server.testing import final_job, wait_for_event
from mediascan.v1 import scan_pb2

pytestmark = pytest.mark.both_walks

#: A scan that meets a FIFO must not hang on it: bound every scan well below the test timeout.
SCAN_TIMEOUT = 30.0


def make_socket(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A Unix socket file at `path` (bound by a relative name: socket paths are short)."""
    with monkeypatch.context() as patch:
        patch.chdir(path.parent)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.bind(path.name)
    assert stat.S_ISSOCK(path.lstat().st_mode)


def try_char_device(path: Path) -> bool:
    """A character device node like /dev/null at `path`, if this machine lets us make one."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except OSError:
        return False
    return True


@pytest.fixture
def odd_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A folder of one real video and many entries with a video extension that are not
    regular files, plus links to a video and to a folder of videos outside it."""
    outside = tmp_path / "outside"
    outside_video = tiny_video(outside / "target.mp4")
    tiny_video(outside / "linked-folder" / "inner.mp4")
    lib = tmp_path / "lib"
    good = tiny_video(lib / "good.mp4")
    fifo = lib / "pipe.mp4"
    os.mkfifo(fifo)
    sock = lib / "sock.mkv"
    make_socket(sock, monkeypatch)
    device = lib / "device.avi"
    has_device = try_char_device(device)
    dangling = lib / "dangling.mp4"
    dangling.symlink_to(tmp_path / "no-such-file.mp4")
    loop_a, loop_b = lib / "loop-a.mp4", lib / "loop-b.mp4"
    loop_a.symlink_to(loop_b)
    loop_b.symlink_to(loop_a)
    self_loop = lib / "self.mov"
    self_loop.symlink_to(self_loop)
    null_link = lib / "null.mp4"
    null_link.symlink_to("/dev/null")
    file_link = lib / "link.mp4"
    file_link.symlink_to(outside_video)
    (lib / "folder-link").symlink_to(outside / "linked-folder", target_is_directory=True)
    (lib / "not-a-video.txt").symlink_to(tmp_path / "nowhere")  # no video extension: ignored
    os.mkfifo(lib / "pipe.txt")  # no video extension: ignored, never opened
    return {
        "lib": lib,
        "good": good,
        "special": [fifo, sock, *([device] if has_device else [])],
        "bad_links": [dangling, loop_a, loop_b, self_loop, null_link],
        "good_links": [file_link, lib / "folder-link" / "inner.mp4"],
    }


async def test_special_files_are_file_errors_and_links_are_not_followed_by_default(
    stub: Any, odd_folder: dict[str, Any]
) -> None:
    job = await scan(stub, odd_folder["lib"], timeout=SCAN_TIMEOUT)
    assert job.state == SUCCEEDED, job.error
    special = odd_folder["special"]
    assert counts(job) == dict(
        files_total=1 + len(special),
        added=1,
        updated=0,
        unchanged=0,
        removed=0,
        failed=len(special),
    )
    errors = errors_by_path(job)
    assert set(errors) == {real(p) for p in special}
    for path, (code, message) in errors.items():
        assert code != grpc.StatusCode.OK and message, path
    assert set(await library(stub, real(odd_folder["lib"]))) == {real(odd_folder["good"])}


async def test_with_follow_symlinks_bad_links_are_file_errors_and_good_links_videos(
    stub: Any, odd_folder: dict[str, Any]
) -> None:
    job = await scan(stub, odd_folder["lib"], follow_symlinks=True, timeout=SCAN_TIMEOUT)
    assert job.state == SUCCEEDED, job.error
    assert job.options.follow_symlinks is True
    bad = odd_folder["special"] + odd_folder["bad_links"]
    good = [odd_folder["good"], *odd_folder["good_links"]]
    assert counts(job) == dict(
        files_total=len(good) + len(bad),
        added=len(good),
        updated=0,
        unchanged=0,
        removed=0,
        failed=len(bad),
    )
    errors = errors_by_path(job)
    # Paths are reported as met (the link's own path), not as resolved.
    lib = real(odd_folder["lib"])
    assert set(errors) == {os.path.join(lib, p.name) for p in bad}
    for path, (code, message) in errors.items():
        assert code != grpc.StatusCode.OK and message, path
    assert set(await library(stub, lib)) == {
        os.path.join(lib, p.relative_to(odd_folder["lib"])) for p in good
    }


async def test_a_folder_reached_twice_through_links_is_scanned_once(
    stub: Any, tmp_path: Path
) -> None:
    root = tmp_path / "root"
    video = tiny_video(root / "real" / "v.mp4")
    (root / "twin").symlink_to(root / "real", target_is_directory=True)
    (root / "real" / "back").symlink_to(root, target_is_directory=True)  # a loop

    plain = await scan(stub, root, timeout=SCAN_TIMEOUT)
    assert plain.state == SUCCEEDED
    assert (plain.result.files_total, plain.result.added) == (1, 1)
    assert not plain.result.file_errors  # links not followed: nothing to report

    # A fresh server would do; here the file is known, so follow the links with full=true.
    followed = await scan(stub, root, follow_symlinks=True, full=True, timeout=SCAN_TIMEOUT)
    assert followed.state == SUCCEEDED, followed.error
    assert followed.result.files_total == 1  # v.mp4 once, whichever way it was reached
    assert followed.result.failed == 0
    reported = set(errors_by_path(followed))
    # The second way into real/ (real or twin, whichever came second), and the loop back to
    # the root (below whichever came first): both reported, neither descended.
    seconds = {real(root) + "/real", real(root) + "/twin"}
    assert len(reported & seconds) == 1, reported
    first = (seconds - reported).pop()
    assert first + "/back" in reported, reported
    assert len(reported) == 2, reported
    listed = set(await library(stub, real(root)))
    assert real(video) in listed
    assert listed <= {real(video), real(root) + "/twin/v.mp4"}


async def test_names_with_unicode_spaces_and_newlines(stub: Any, tmp_path: Path) -> None:
    root = tmp_path / "Vidéos d'été 🎬"
    names = [
        "clip with spaces.mp4",
        "new\nline.mp4",
        "日本語のビデオ.mp4",
        "tab\tand 'quotes\" and \\backslash.mp4",
        "sub folder\nwith newline/ünïcødé.MP4",
        "-leading-dash.mp4",
        "%20 not escaped?.mp4",
    ]
    made = [tiny_video(root / name) for name in names]
    bad_name = os.fsencode(root) + b"/latin1-\xe9t\xe9.mp4"  # not valid UTF-8
    with open(bad_name, "wb") as handle:
        handle.write(made[0].read_bytes())

    job = await scan(stub, root, timeout=SCAN_TIMEOUT)
    assert job.state == SUCCEEDED, job.error
    assert (job.result.files_total, job.result.added, job.result.failed) == (
        len(names) + 1,
        len(names),
        1,
    )
    # The undecodable name is one reported file error (gRPC strings must be UTF-8).
    (error,) = job.result.file_errors
    assert code_of(error.status) == grpc.StatusCode.INVALID_ARGUMENT and "latin1-" in error.path, (
        error
    )

    listed = await library(stub, real(root))
    assert set(listed) == {real(p) for p in made}
    for path in made:
        video = await stub.GetVideo(scan_pb2.GetVideoRequest(path=real(path)))
        assert video.path == real(path)
        assert (await stub.GetVideo(scan_pb2.GetVideoRequest(video_id=video.video_id))) == video
    nested = await library(stub, real(root / "sub folder\nwith newline"))
    assert set(nested) == {real(made[4])}


async def test_a_file_that_vanishes_between_walk_and_probe_is_a_file_error(
    make_server: Any, connect: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One probe at a time; the first probe hangs (killed after the probe timeout); the file
    after it is deleted once the walk has met it, before its probe."""
    set_fault(monkeypatch, "hang", HANG_MARK)
    server = await make_server(probe_timeout=SHORT_PROBE_TIMEOUT, probe_concurrency=1, **QUICK_STOP)
    stub = await connect(server.address)
    root = tmp_path / "lib"
    hang = tiny_video(root / f"{HANG_MARK}.mp4")  # the root is listed first: probed first
    os.mkfifo(root / "pipe.mp4")  # a walk error: makes the walk's count visible at once
    doomed = tiny_video(root / "sub" / "doomed.mp4")
    kept = tiny_video(root / "sub" / "kept.mp4")

    job_id = (await submit(stub, root)).job_id
    await wait_for_event(
        stub,
        job_id,
        lambda e: progress_of(e) is not None and progress_of(e).files_found >= 4,
        timeout=SCAN_TIMEOUT,
    )
    doomed.unlink()
    job = await final_job(stub, job_id, timeout=SCAN_TIMEOUT)
    assert job.state == SUCCEEDED, job.error
    errors = errors_by_path(job)
    assert errors[real(hang)][0] == grpc.StatusCode.DEADLINE_EXCEEDED
    assert errors[real(doomed)][0] == grpc.StatusCode.NOT_FOUND, errors[real(doomed)]
    assert real(root / "pipe.mp4") in errors
    assert counts(job) == dict(files_total=4, added=1, updated=0, unchanged=0, removed=0, failed=3)
    assert set(await library(stub, real(root))) == {real(kept)}


async def test_a_root_swapped_for_a_symlink_after_submit_fails_permission_denied(
    make_server: Any, connect: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    allowed = tmp_path / "allowed"
    outside = tmp_path / "outside"
    allowed.mkdir()
    set_fault(monkeypatch, "hang", HANG_MARK)
    server = await make_server(
        workers=1, allow_roots=(allowed,), probe_timeout=LONG_PROBE_TIMEOUT, **QUICK_STOP
    )
    stub = await connect(server.address)
    blocker = await start_hung_blocker(stub, allowed / "blocker")
    swapped = allowed / "swapped"  # becomes a link to a folder outside the allowed roots
    parent = allowed / "parent"  # its parent becomes such a link
    inward = allowed / "inward"  # becomes a link to another folder inside the allowed roots
    for folder in (
        swapped,
        parent / "child",
        inward,
        outside / "swapped",
        outside / "parent" / "child",
        allowed / "elsewhere",
    ):
        tiny_video(folder / "v.mp4")
    jobs = {
        name: (await submit(stub, folder)).job_id
        for name, folder in (("swapped", swapped), ("parent", parent / "child"), ("inward", inward))
    }

    for folder, target in (
        (swapped, outside / "swapped"),
        (parent, outside / "parent"),
        (inward, allowed / "elsewhere"),
    ):
        folder.rename(tmp_path / f"moved-{folder.name}")
        folder.symlink_to(target, target_is_directory=True)

    assert (await cancel(stub, blocker)).state == CANCELLED
    for name, job_id in jobs.items():
        job = await final_job(stub, job_id, timeout=SCAN_TIMEOUT)
        assert job.state == FAILED, (name, job)
        assert code_of(job.error) == grpc.StatusCode.PERMISSION_DENIED, (name, job.error)
        assert job.error.message, name
        assert job.result.files_total == 0, name
    assert await library(stub, real(outside)) == {}
    assert await library(stub, real(allowed)) == {}


# -- names that are not UTF-8 on entries that are not videos (issue 11, item 3) ------------------


def escaped(folder: Path, raw_name: bytes) -> str:
    """How a job reports the path of a name that is not UTF-8: undecodable bytes as \\xHH."""
    return real(folder) + "/" + raw_name.decode("utf-8", "backslashreplace")


def odd_entries_with_bad_names(base: Path) -> tuple[Path, Path, dict[bytes, grpc.StatusCode]]:
    """allowed/lib: one good video beside a FIFO, a dangling link, a link to a video outside
    the allowed roots and a link to a folder outside them, each named with a byte that is not
    UTF-8. Returns the folder, the good video and {raw name: the code each must get when the
    scan follows links}: a video name that is not UTF-8 is never opened, so the link to a
    video gets the code of such a name."""
    lib = base / "allowed" / "lib"
    good = tiny_video(lib / "good.mp4")
    outside_video = tiny_video(base / "outside" / "v.mp4")
    raw = os.fsencode(lib) + b"/"
    os.mkfifo(raw + b"fifo-\xff.mp4")
    os.symlink(os.fsencode(base / "nowhere.mp4"), raw + b"dangling-\xfe.mp4")
    os.symlink(os.fsencode(outside_video), raw + b"out-\xfd.mp4")
    os.symlink(os.fsencode(outside_video.parent), raw + b"outdir-\xfc", target_is_directory=True)
    expected = {
        b"fifo-\xff.mp4": grpc.StatusCode.FAILED_PRECONDITION,
        b"dangling-\xfe.mp4": grpc.StatusCode.FAILED_PRECONDITION,
        b"out-\xfd.mp4": grpc.StatusCode.INVALID_ARGUMENT,
        b"outdir-\xfc": grpc.StatusCode.PERMISSION_DENIED,
    }
    return lib, good, expected


@pytest.mark.parametrize("follow", [False, True], ids=["links-off", "links-on"])
async def test_odd_entries_with_names_that_are_not_utf8_are_file_errors(
    make_server: Any, connect: Any, tmp_path: Path, follow: bool
) -> None:
    lib, good, expected = odd_entries_with_bad_names(tmp_path)
    server = await make_server(allow_roots=(tmp_path / "allowed",))
    stub = await connect(server.address)
    job = await scan(stub, lib, follow_symlinks=follow, timeout=SCAN_TIMEOUT)
    assert job.state == SUCCEEDED, job.error
    if not follow:  # links are not followed: only the FIFO is reported
        expected = {b"fifo-\xff.mp4": expected[b"fifo-\xff.mp4"]}
    errors = errors_by_path(job)
    assert set(errors) == {escaped(lib, name) for name in expected}, errors
    for name, code in expected.items():
        got, message = errors[escaped(lib, name)]
        assert got == code, (name, got, message)
        assert "not valid UTF-8" in message and "\\xHH" in message, message
    assert job.result.added == 1
    assert set(await library(stub, real(lib))) == {real(good)}


@pytest.mark.skipif(
    not can_drop_file_permission_bypass(),
    reason="running as root without util-linux setpriv: chmod 000 cannot lock the server out",
)
async def test_an_unreadable_folder_whose_name_is_not_utf8_is_a_folder_error(
    tmp_path: Path,
) -> None:
    lib = tmp_path / "lib"
    good = tiny_video(lib / "good.mp4")
    locked = os.fsencode(lib) + b"/locked-\xfb"
    os.mkdir(locked)
    tiny_video(Path(os.fsdecode(locked)) / "inner.mp4")
    os.chmod(locked, 0)
    try:
        async with unprivileged_server(tmp_path / "mediascan.db") as (stub, _):
            job = await scan(stub, lib, timeout=SCAN_TIMEOUT)
            listed = await library(stub, real(lib))
    finally:
        os.chmod(locked, 0o755)
    assert job.state == SUCCEEDED, job.error
    errors = errors_by_path(job)
    assert list(errors) == [escaped(lib, b"locked-\xfb")], errors
    assert errors[escaped(lib, b"locked-\xfb")][0] == grpc.StatusCode.PERMISSION_DENIED
    assert (job.result.files_total, job.result.added, job.result.failed) == (1, 1, 0)
    assert set(listed) == {real(good)}
