"""The path policy (`roots.py`), in one test file: the allowed roots resolved at start, the
submit-time resolution, the start-time check of the scanned folder, the symbolic-link rules and
the pseudo file systems a walk does not enter.

Resolving a submitted folder never gives INTERNAL (issue 11.6): the magic links of /proc
(`/proc/1/root`, `/proc/PID/cwd`, `/proc/self/fd/N`, `/dev/fd/N`, namespaces, map_files) and any
error of a path component (EACCES in readlink, ELOOP, ENAMETOOLONG, ENOTDIR) give a clear status.

The resolver (`roots.resolve_folder`, what SubmitScan runs in its path lane) is fuzzed with
hypothesis over real odd paths of this machine, with and without allowed roots; a few of them
then go through real gRPC to a real server."""

from __future__ import annotations

import asyncio
import errno
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from _library_helpers import errors_by_path, scan, tiny_video
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediascan.server.app import ConfigError
from mediascan.server.errors import Code, MediascanError
from mediascan.server.mounts import PSEUDO_TYPES, parse_mountinfo
from mediascan.server.roots import (
    AllowedRoots,
    RootError,
    is_within,
    nofollow,
    open_root,
    opened_path,
    resolve_roots,
)
from mediascan.server.roots import resolve_folder as _resolve_folder
from mediascan.server.testing import field_violations, make_many
from mediascan.v1 import scan_pb2, scan_pb2_grpc

#: The codes a folder resolution may answer (api.md, SubmitScan).
CLEAR = {Code.PERMISSION_DENIED, Code.NOT_FOUND, Code.FAILED_PRECONDITION, Code.INVALID_ARGUMENT}

PREFIXES = [
    "/proc/self",
    "/proc/1",
    "/proc/thread-self",
    f"/proc/{os.getpid()}",
    "/dev/fd",
    "/proc/self/fd",
    "/proc/1/root",
    "/proc/1/cwd",
    "/proc/self/root",
    "/proc/self/cwd",
    "/proc/1/task/1",
    "/proc/self/task",
    "/",
]
PARTS = [
    "..",
    ".",
    "",
    "root",
    "cwd",
    "fd",
    "fdinfo",
    "exe",
    "ns",
    "net",
    "mnt",
    "map_files",
    "attr",
    "task",
    "self",
    "1",
    "0",
    "2",
    "3",
    "255",
    "etc",
    "tmp",
    "proc",
    "dev",
    "x" * 256,
    "é",
]


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, int]]:
    """An allowed root (real path) holding a folder of videos, a loop of links and a link out;
    and a descriptor open on the root (so /proc/self/fd/N names it)."""
    root = Path(os.path.realpath(tmp_path_factory.mktemp("resolve")))
    make_many(root / "videos", 1)
    (root / "loop1").symlink_to("loop2")
    (root / "loop2").symlink_to("loop1")
    (root / "out").symlink_to("/proc/1/root")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield root, fd
    finally:
        os.close(fd)


def odd_paths(root: Path, fd: int) -> st.SearchStrategy[str]:
    prefixes = st.sampled_from([*PREFIXES, str(root), f"/proc/self/fd/{fd}", f"/dev/fd/{fd}"])
    parts = st.lists(st.sampled_from([*PARTS, str(fd), "loop1", "out", "videos"]), max_size=5)
    suffix = st.sampled_from(["", str(root), "/etc", "/tmp"])
    return st.builds(
        lambda p, ps, s: (p.rstrip("/") + "/" + "/".join(ps) + s).replace("//", "/") or "/",
        prefixes,
        parts,
        suffix,
    )


def check(path: str, roots: list[str]) -> str:
    """Resolve `path`: a folder within the roots, or a clear status; anything else fails."""
    try:
        real = _resolve_folder(path, roots)
    except MediascanError as exc:
        assert exc.code in CLEAR, (path, exc.code, exc)
        assert exc.message, path
        return exc.code.name
    assert real.startswith("/") and os.path.isdir(real), (path, real)
    assert not roots or any(is_within(real, root) for root in roots), (path, real)
    return "OK"


def test_resolver_fuzz(place: tuple[Path, int]) -> None:
    root, fd = place
    seen: dict[str, int] = {}

    @settings(
        max_examples=600,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(path=odd_paths(root, fd), limited=st.booleans())
    def resolve(path: str, limited: bool) -> None:
        code = check(path, [str(root)] if limited else [])
        seen[code] = seen.get(code, 0) + 1

    resolve()
    # The search reached every kind of answer, not only one.
    assert {"OK", "PERMISSION_DENIED", "NOT_FOUND", "FAILED_PRECONDITION"} <= set(seen), seen


@pytest.mark.parametrize(
    "path",
    [
        "/proc/1/root/etc",
        "/proc/1/root",
        "/proc/1/cwd",
        "/proc/1/fd/0",
        "/proc/1/ns/net",
        "/proc/1/root/..",
    ],
)
def test_unreadable_magic_links_are_permission_denied(path: str, place: tuple[Path, int]) -> None:
    """As in a container: readlink of another process's root or cwd fails with EACCES (and
    where it does not, the target is outside the root): PERMISSION_DENIED either way."""
    root, _ = place
    with pytest.raises(MediascanError) as caught:
        _resolve_folder(path, [str(root)])
    assert caught.value.code == Code.PERMISSION_DENIED


def test_text_and_loops(place: tuple[Path, int]) -> None:
    root, _ = place
    with pytest.raises(MediascanError) as caught:
        _resolve_folder(f"{root}/{'x' * 300}", [str(root)])
    assert caught.value.code == Code.INVALID_ARGUMENT
    with pytest.raises(MediascanError) as caught:
        _resolve_folder(f"{root}/loop1/x", [str(root)])
    assert caught.value.code == Code.FAILED_PRECONDITION
    with pytest.raises(MediascanError) as caught:
        _resolve_folder(f"{root}/out/etc", [str(root)])
    assert caught.value.code == Code.PERMISSION_DENIED
    assert _resolve_folder(f"/proc/self/root{root}/videos", [str(root)]) == f"{root}/videos"


async def test_through_grpc(make_server: Any, connect: Any, place: tuple[Path, int]) -> None:
    root, fd = place
    server = await make_server(allow_roots=(root,))
    stub = await connect(server.address)
    answers: dict[str, str] = {}
    for path in [
        "/proc/1/root/etc",
        "/proc/1/cwd",
        "/proc/self/cwd",
        "/proc/self/fd/0",
        f"/dev/fd/{fd}",
        f"/proc/self/fd/{fd}/videos",
        f"/proc/1/root{root}",
        f"{root}/{'y' * 300}",
        f"{root}/loop1",
    ]:
        try:
            response = await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=path), timeout=30)
        except grpc.aio.AioRpcError as error:
            assert Code(error.code().value[0]) in CLEAR, (path, error.code(), error.details())
            if error.code() == grpc.StatusCode.INVALID_ARGUMENT:
                assert "path" in field_violations(error)
            answers[path] = error.code().name
        else:
            assert is_within(response.job.path, str(root)), (path, response.job.path)
            answers[path] = "OK"
    assert answers["/proc/1/root/etc"] == "PERMISSION_DENIED"
    assert answers["/proc/1/cwd"] == "PERMISSION_DENIED"
    assert answers[f"{root}/{'y' * 300}"] == "INVALID_ARGUMENT"


# -- the allowed roots, at start --------------------------------------------------------------


def test_allowed_roots_are_resolved_once_at_start(tmp_path: Path) -> None:
    real = tmp_path / "media"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    roots = resolve_roots([tmp_path / "link"])
    assert roots.paths == (os.path.realpath(real),)
    assert roots.allows(os.path.realpath(real) + "/sub") and not roots.allows("/etc")
    assert not roots.allows(os.path.realpath(real) + "-other")  # a sibling with a common prefix
    assert AllowedRoots().allows("/etc")  # no roots: any folder
    with pytest.raises(RootError, match=r"--allow-root .*not an existing folder"):
        resolve_roots([tmp_path / "missing"])


async def test_a_missing_allowed_root_stops_the_start(make_server: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="--allow-root"):
        await make_server(allow_roots=(tmp_path / "missing",))


# -- the scanned folder, at start time --------------------------------------------------------


def test_the_scanned_folder_must_still_be_what_was_accepted(tmp_path: Path) -> None:
    folder = tmp_path / "videos"
    folder.mkdir()
    fd = open_root(str(folder))
    try:
        assert opened_path(fd) == str(folder)
    finally:
        os.close(fd)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    folder.rmdir()
    folder.symlink_to(elsewhere)  # swapped for a link after the submit
    with pytest.raises(MediascanError) as caught:
        open_root(str(folder))
    assert caught.value.code == Code.PERMISSION_DENIED
    folder.unlink()
    with pytest.raises(MediascanError) as caught:
        open_root(str(folder))
    assert caught.value.code == Code.NOT_FOUND
    folder.write_bytes(b"")
    with pytest.raises(MediascanError) as caught:
        open_root(str(folder))
    assert caught.value.code == Code.FAILED_PRECONDITION


# -- symbolic links ---------------------------------------------------------------------------


def test_links_are_not_followed_unless_asked_and_then_checked_by_what_opened(
    tmp_path: Path,
) -> None:
    inside = tmp_path / "root"
    (inside / "sub").mkdir(parents=True)
    (inside / "in").symlink_to(inside / "sub")
    (inside / "out").symlink_to("/etc")
    roots = AllowedRoots([str(inside)])
    root = os.open(inside, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError) as caught:
            os.open("in", os.O_RDONLY | os.O_DIRECTORY | nofollow(False), dir_fd=root)
        assert caught.value.errno in (errno.ELOOP, errno.ENOTDIR)  # never followed
        followed_in = os.open("in", os.O_RDONLY | os.O_DIRECTORY | nofollow(True), dir_fd=root)
        followed_out = os.open("out", os.O_RDONLY | os.O_DIRECTORY | nofollow(True), dir_fd=root)
    finally:
        os.close(root)
    try:
        assert roots.holds(followed_in)
        assert not roots.holds(followed_out)
    finally:
        os.close(followed_in)
        os.close(followed_out)


# -- pseudo file systems ----------------------------------------------------------------------


def test_mountinfo_is_read_by_type_not_by_path() -> None:
    text = (
        "22 1 0:21 / /proc rw,nosuid - proc proc rw\n"
        "23 1 0:22 / /sys rw - sysfs sysfs rw\n"
        "24 1 0:5 / /dev rw shared:2 - devtmpfs udev rw\n"
        "25 24 0:23 / /dev/shm rw - tmpfs tmpfs rw\n"
        "26 1 0:24 / /media/my\\040videos rw - ext4 /dev/sdb1 rw\n"
        "27 1 0:25 / /srv/odd rw master:1 shared:3 - cgroup2 cgroup2 rw\n"
    )
    types = parse_mountinfo(text)
    assert types["/media/my videos"] == "ext4"
    assert {p for p, t in types.items() if t in PSEUDO_TYPES} == {
        "/proc",
        "/sys",
        "/dev",
        "/srv/odd",
    }
    assert types["/dev/shm"] == "tmpfs" and "tmpfs" not in PSEUDO_TYPES


def _can_unshare() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    done = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "true"], capture_output=True, check=False
    )
    return done.returncode == 0


@pytest.mark.slow
@pytest.mark.skipif(not _can_unshare(), reason="needs root and `unshare -m`")
async def test_a_scan_does_not_enter_pseudo_file_systems(tmp_path: Path) -> None:
    """A real server in a private mount namespace (nothing changes outside it): below the
    scanned folder, a proc, a sysfs and a tmpfs are mounted. The scan walks the tmpfs (a real
    file system) and skips proc and sysfs, saying so; scanning the proc mount by name enters it."""
    lib = tmp_path / "lib"
    for name in ("proc", "sys", "ram"):
        (lib / name).mkdir(parents=True)
    video = tiny_video(lib / "a.mp4")
    shell = (
        f"mount -t proc proc {lib}/proc && mount -t sysfs sysfs {lib}/sys && "
        f"mount -t tmpfs tmpfs {lib}/ram && cp {video} {lib}/ram/b.mp4 && "
        f'exec "$0" "$@"'
    )
    command = [
        "unshare",
        "-m",
        "--propagation",
        "private",
        "sh",
        "-c",
        shell,
        str(Path(sys.executable).parent / "mediascan-server"),
        "--listen",
        "127.0.0.1:0",
        "--db",
        str(tmp_path / "mediascan.db"),
        "--shutdown-grace",
        "0.5s",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASCAN_")}
    process = await asyncio.create_subprocess_exec(
        *command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    try:
        assert process.stdout is not None
        async with asyncio.timeout(30):
            line = (await process.stdout.readline()).decode()
        assert line.startswith("mediascan-server listening on "), line
        address = line.split()[-1]
        async with grpc.aio.insecure_channel(address) as channel:
            stub = scan_pb2_grpc.ScanServiceStub(channel)
            job = await scan(stub, lib, timeout=60)
            asked = await scan(stub, lib / "proc", recursive=False, timeout=60)
    finally:
        if process.returncode is None:
            process.kill()
        await process.wait()
    assert job.state == scan_pb2.JOB_STATE_SUCCEEDED, job
    errors = errors_by_path(job)
    assert set(errors) == {f"{lib}/proc", f"{lib}/sys"}, errors
    assert "a proc file system" in errors[f"{lib}/proc"][1]
    assert "a sysfs file system" in errors[f"{lib}/sys"][1]
    assert job.progress.added == 2  # a.mp4 and ram/b.mp4 (the tmpfs is walked)
    assert asked.state == scan_pb2.JOB_STATE_SUCCEEDED, asked
    assert not errors_by_path(asked)  # the folder asked for is entered, whatever it is on
