"""Every bad input gets its status code and a rich error detail naming the field, and the server
goes on serving good requests afterwards."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import grpc
import pytest

from mediascan.server.testing import duration, field_violations, make_many, rich_status
from mediascan.v1 import scan_pb2

#: The contract holds on both backends (tests/conftest.py `backend`).
pytestmark = pytest.mark.both_backends

UNKNOWN_JOB = "j_00000000000000000000000000"


@dataclasses.dataclass(frozen=True)
class Roots:
    allowed: Path
    outside: Path


@pytest.fixture
def roots(tmp_path: Path) -> Roots:
    """allowed/ (the server's only allowed root) with a video folder, a file, a link that points
    outside and one that points inside; outside/ next to it."""
    allowed = tmp_path / "allowed"
    outside = tmp_path / "outside"
    make_many(allowed / "videos", 2)
    make_many(outside, 1)
    (allowed / "escape").symlink_to(outside, target_is_directory=True)
    (allowed / "alias").symlink_to(allowed / "videos", target_is_directory=True)
    return Roots(allowed=allowed, outside=outside)


@pytest.fixture
async def guarded(make_server: Any, connect: Any, roots: Roots) -> Any:
    """A stub to a server that only scans under roots.allowed."""
    server = await make_server(allow_roots=(roots.allowed,))
    return await connect(server.address)


async def assert_still_serving(stub: Any, roots: Roots) -> None:
    good = await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(roots.allowed / "videos")))
    assert good.job.path == str((roots.allowed / "videos").resolve())
    assert (await stub.GetJob(scan_pb2.GetJobRequest(job_id=good.job_id))).job_id == good.job_id


def assert_error(error: grpc.aio.AioRpcError, code: grpc.StatusCode, field: str) -> None:
    assert error.code() == code, (error.code(), error.details())
    assert error.details(), "empty error message"
    status = rich_status(error)
    assert status is not None, "no grpc-status-details-bin trailer"
    violations = field_violations(error)
    assert field in violations, f"no BadRequest field violation for {field!r}: {violations}"
    assert violations[field], "empty field violation description"


BAD_SUBMITS: list[tuple[str, Any, grpc.StatusCode, str]] = [
    ("empty-path", lambda r: {"path": ""}, grpc.StatusCode.INVALID_ARGUMENT, "path"),
    ("relative-path", lambda r: {"path": "videos"}, grpc.StatusCode.INVALID_ARGUMENT, "path"),
    (
        "dot-relative-path",
        lambda r: {"path": "./allowed/videos"},
        grpc.StatusCode.INVALID_ARGUMENT,
        "path",
    ),
    (
        "nul-byte",
        lambda r: {"path": f"{r.allowed}/videos\x00/etc"},
        grpc.StatusCode.INVALID_ARGUMENT,
        "path",
    ),
    (
        "missing-path",
        lambda r: {"path": str(r.allowed / "nope")},
        grpc.StatusCode.NOT_FOUND,
        "path",
    ),
    (
        "a-file",
        lambda r: {"path": str(r.allowed / "videos" / "v00000.mp4")},
        grpc.StatusCode.FAILED_PRECONDITION,
        "path",
    ),
    (
        "outside",
        lambda r: {"path": str(r.outside)},
        grpc.StatusCode.PERMISSION_DENIED,
        "path",
    ),
    (
        "outside-via-dotdot",
        lambda r: {"path": f"{r.allowed}/videos/../../outside"},
        grpc.StatusCode.PERMISSION_DENIED,
        "path",
    ),
    (
        "outside-via-symlink",
        lambda r: {"path": str(r.allowed / "escape")},
        grpc.StatusCode.PERMISSION_DENIED,
        "path",
    ),
    ("root", lambda r: {"path": "/"}, grpc.StatusCode.PERMISSION_DENIED, "path"),
    (
        "negative-timeout",
        lambda r: {"path": str(r.allowed / "videos"), "timeout": duration(-1)},
        grpc.StatusCode.INVALID_ARGUMENT,
        "timeout",
    ),
    (
        "priority-too-high",
        lambda r: {"path": str(r.allowed / "videos"), "priority": 101},
        grpc.StatusCode.INVALID_ARGUMENT,
        "priority",
    ),
    (
        "priority-too-low",
        lambda r: {"path": str(r.allowed / "videos"), "priority": -101},
        grpc.StatusCode.INVALID_ARGUMENT,
        "priority",
    ),
    (
        "request-id-too-long",
        lambda r: {"path": str(r.allowed / "videos"), "request_id": "x" * 129},
        grpc.StatusCode.INVALID_ARGUMENT,
        "request_id",
    ),
]


@pytest.mark.parametrize(
    ("make_request", "code", "field"),
    [case[1:] for case in BAD_SUBMITS],
    ids=[case[0] for case in BAD_SUBMITS],
)
async def test_bad_submit(
    guarded: Any, roots: Roots, make_request: Any, code: grpc.StatusCode, field: str
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await guarded.SubmitScan(scan_pb2.SubmitScanRequest(**make_request(roots)))
    assert_error(info.value, code, field)
    # Nothing was queued, and the server still answers.
    assert not (await guarded.ListJobs(scan_pb2.ListJobsRequest())).jobs
    await assert_still_serving(guarded, roots)


async def test_allowed_paths_are_resolved(guarded: Any, roots: Roots) -> None:
    target = str((roots.allowed / "videos").resolve())
    for path in (
        roots.allowed / "videos",
        f"{roots.allowed}/videos/../videos/",
        roots.allowed / "alias",  # a symlink that stays inside the allowed root
    ):
        response = await guarded.SubmitScan(scan_pb2.SubmitScanRequest(path=str(path)))
        assert response.job.path == target, path
    allowed_root = await guarded.SubmitScan(scan_pb2.SubmitScanRequest(path=str(roots.allowed)))
    assert allowed_root.job.path == str(roots.allowed.resolve())


async def test_priority_bounds_are_inclusive(stub: Any, roots: Roots) -> None:
    for priority, path in ((-100, roots.outside), (100, roots.allowed / "videos")):
        response = await stub.SubmitScan(
            scan_pb2.SubmitScanRequest(path=str(path), priority=priority)
        )
        assert response.job.options.priority == priority


@pytest.mark.parametrize(
    ("method", "request_factory"),
    [
        ("ListJobs", lambda: scan_pb2.ListJobsRequest(page_token="not-a-token")),
        ("ListJobs", lambda: scan_pb2.ListJobsRequest(page_token="AAAA")),
        ("ListVideos", lambda: scan_pb2.ListVideosRequest(page_token="not-a-token")),
    ],
    ids=["jobs-garbage", "jobs-base64", "videos-garbage"],
)
async def test_bad_page_token(stub: Any, roots: Roots, method: str, request_factory: Any) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await getattr(stub, method)(request_factory())
    assert_error(info.value, grpc.StatusCode.INVALID_ARGUMENT, "page_token")
    await assert_still_serving(stub, roots)


async def test_negative_page_size(stub: Any, roots: Roots) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListJobs(scan_pb2.ListJobsRequest(page_size=-1))
    assert_error(info.value, grpc.StatusCode.INVALID_ARGUMENT, "page_size")
    await assert_still_serving(stub, roots)


@pytest.mark.parametrize("method", ["GetJob", "CancelJob", "DeleteJob"])
async def test_unknown_job_id_is_not_found(stub: Any, roots: Roots, method: str) -> None:
    request_type = {
        "GetJob": scan_pb2.GetJobRequest,
        "CancelJob": scan_pb2.CancelJobRequest,
        "DeleteJob": scan_pb2.DeleteJobRequest,
    }[method]
    for job_id in (UNKNOWN_JOB, "no-such-job"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await getattr(stub, method)(request_type(job_id=job_id))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND, job_id
        assert info.value.details()
    await assert_still_serving(stub, roots)


@pytest.mark.parametrize("method", ["GetJob", "CancelJob", "DeleteJob", "WatchJob"])
async def test_empty_job_id_is_rejected(stub: Any, roots: Roots, method: str) -> None:
    request_type = {
        "GetJob": scan_pb2.GetJobRequest,
        "CancelJob": scan_pb2.CancelJobRequest,
        "DeleteJob": scan_pb2.DeleteJobRequest,
        "WatchJob": scan_pb2.WatchJobRequest,
    }[method]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        call = getattr(stub, method)(request_type(job_id=""))
        if method == "WatchJob":
            async for _ in call:
                pass
        else:
            await call
    assert info.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    await assert_still_serving(stub, roots)


async def test_get_video_errors(stub: Any, roots: Roots) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetVideo(scan_pb2.GetVideoRequest(path=str(roots.outside / "v00000.mp4")))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetVideo(scan_pb2.GetVideoRequest(video_id="v_987654321"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetVideo(scan_pb2.GetVideoRequest(video_id="no-such-video"))
    assert info.value.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetVideo(scan_pb2.GetVideoRequest())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await assert_still_serving(stub, roots)


async def test_negative_after_sequence(stub: Any, roots: Roots) -> None:
    job_id = (
        await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(roots.allowed / "videos")))
    ).job_id
    with pytest.raises(grpc.aio.AioRpcError) as info:
        async for _ in stub.WatchJob(scan_pb2.WatchJobRequest(job_id=job_id, after_sequence=-1)):
            pass
    assert_error(info.value, grpc.StatusCode.INVALID_ARGUMENT, "after_sequence")
    await assert_still_serving(stub, roots)
