"""Resolving a submitted folder never gives INTERNAL (issue 11.6): the magic links of /proc
(`/proc/1/root`, `/proc/PID/cwd`, `/proc/self/fd/N`, `/dev/fd/N`, namespaces, map_files) and any
error of a path component (EACCES in readlink, ELOOP, ENAMETOOLONG, ENOTDIR) give a clear status.

The resolver (`service._resolve_folder`, what SubmitScan runs in its path lane) is fuzzed with
hypothesis over real odd paths of this machine, with and without allowed roots; a few of them
then go through real gRPC to a real server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediascan.server.errors import Code, MediascanError
from mediascan.server.jobs import is_within
from mediascan.server.service import _resolve_folder
from mediascan.server.testing import field_violations, make_many
from mediascan.v1 import scan_pb2

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
