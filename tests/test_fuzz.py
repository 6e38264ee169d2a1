"""Bad input (issue 5.1): hypothesis generates the fields of every ScanService request, and raw
bytes that are not a valid request at all, and sends them through real gRPC to one real
`mediascan-server` subprocess that every test of this module shares.

Properties, for every example:
- the answer is a deliberate status code from the RPC's documented set, never UNKNOWN or
  INTERNAL; a failure has a message, its rich status agrees with it, and INVALID_ARGUMENT names
  the field at fault in a BadRequest field violation (unless the bytes are no message at all);
- right after it, a good request (GetJob of a known finished job) still succeeds, and at the end
  of each test the process is alive and its health check answers SERVING.

The search is derandomized (the same examples on every run, so CI is reproducible); set
MEDIASCAN_FUZZ_SCALE=10 for a ten times deeper local run. What the fuzzing found (INTERNAL on
non-ASCII digits, on durations past 2**63 ns and on page tokens holding lone surrogates; UNKNOWN
on undecodable bytes; error trailers too big for a default client) is pinned by the last tests
of this module, one deterministic case each.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import dataclasses
import json
import os
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from _robust import ServerProcess, record_figures, start_server_sync, stop_server_sync
from google.protobuf import duration_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mediascan.server.testing import field_violations, make_many, retry_delay, rich_status
from mediascan.v1 import scan_pb2, scan_pb2_grpc

Code = grpc.StatusCode

SCALE = float(os.environ.get("MEDIASCAN_FUZZ_SCALE", "1"))
#: Most seconds a single request may take, stream included.
CALL_TIMEOUT = 20.0


def fuzz(examples: int) -> Any:
    """Settings of one fuzz test: `examples` examples (times MEDIASCAN_FUZZ_SCALE), the same
    ones on every run, no deadline (a real server answers), no example database on disk."""
    return settings(
        max_examples=max(1, round(examples * SCALE)),
        deadline=None,
        derandomize=True,
        database=None,
        print_blob=False,
        suppress_health_check=list(HealthCheck),
    )


# -- the server under test ---------------------------------------------------------------------


@dataclasses.dataclass
class Target:
    """The shared server and what the tests know about it."""

    server: ServerProcess
    #: The server's only allowed root; it holds `videos/` (two videos) and `notes.txt`.
    root: Path
    #: Finished jobs: `canary` is read after every example and must always be there;
    #: `spare` may be cancelled or deleted by the examples.
    canary: str
    spare: list[str]
    #: A real next_page_token of ListJobs(page_size=1) and of ListVideos(page_size=1).
    jobs_token: str
    videos_token: str
    #: Answers, by test and status code name (for the figures).
    tally: dict[str, collections.Counter[str]] = dataclasses.field(
        default_factory=lambda: collections.defaultdict(collections.Counter)
    )
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)


def _wait_finished(stub: Any, job_id: str) -> None:
    for event in stub.WatchJob(scan_pb2.WatchJobRequest(job_id=job_id), timeout=60):
        del event
    job = stub.GetJob(scan_pb2.GetJobRequest(job_id=job_id), timeout=10)
    assert job.state == scan_pb2.JOB_STATE_SUCCEEDED, job


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    work = tmp_path_factory.mktemp("fuzz")
    root = work / "root"
    make_many(root / "videos", 2)
    (root / "notes.txt").write_text("not a folder\n")
    server = start_server_sync(
        work,
        "--allow-root",
        str(root),
        "--workers",
        "2",
        "--shutdown-grace",
        "1s",
        db=work / "fuzz.db",
    )
    try:
        # Setup with the synchronous API: no event loop is running yet.
        with grpc.insecure_channel(server.address) as channel:
            grpc.channel_ready_future(channel).result(timeout=20)
            stub = scan_pb2_grpc.ScanServiceStub(channel)
            ids = []
            for folder in (root / "videos", root, f"{root}/videos/", f"{root}/./videos/.."):
                job_id = stub.SubmitScan(
                    scan_pb2.SubmitScanRequest(path=str(folder), priority=len(ids)), timeout=10
                ).job_id
                _wait_finished(stub, job_id)
                ids.append(job_id)
            jobs_token = stub.ListJobs(scan_pb2.ListJobsRequest(page_size=1)).next_page_token
            videos_token = stub.ListVideos(scan_pb2.ListVideosRequest(page_size=1)).next_page_token
        assert jobs_token and videos_token
        yield Target(
            server=server,
            root=root,
            canary=ids[0],
            spare=ids[1:],
            jobs_token=jobs_token,
            videos_token=videos_token,
        )
    finally:
        stop_server_sync(server)


@pytest.fixture
async def stub(target: Target) -> AsyncIterator[Any]:
    if not target.server.alive():
        pytest.fail(f"the fuzzed server died in an earlier test:\n{target.server.tail()}")
    channel = grpc.aio.insecure_channel(target.server.address)
    async with asyncio.timeout(20):
        await channel.channel_ready()
    yield scan_pb2_grpc.ScanServiceStub(channel)
    # The server is still up and healthy after the whole test.
    assert target.server.alive(), target.server.tail()
    health = await health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(), timeout=10
    )
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    await channel.close(None)


# -- checking one answer ------------------------------------------------------------------------

SUBMIT = {
    Code.OK,
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.FAILED_PRECONDITION,
    Code.PERMISSION_DENIED,
    Code.RESOURCE_EXHAUSTED,  # a queue that is full, or a message over the size limit
}
BY_ID = {
    Code.OK,
    Code.INVALID_ARGUMENT,
    Code.NOT_FOUND,
    Code.FAILED_PRECONDITION,
    Code.RESOURCE_EXHAUSTED,
}
LISTING = {Code.OK, Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED}
GET_VIDEO = {Code.OK, Code.INVALID_ARGUMENT, Code.NOT_FOUND, Code.RESOURCE_EXHAUSTED}


def _describe(request: Any) -> str:
    if isinstance(request, bytes):
        return f"raw bytes {request[:200]!r}"
    text = repr(request)
    return text if len(text) < 600 else text[:600] + f"... ({len(text)} characters)"


async def answer(
    target: Target,
    stub: Any,
    test: str,
    method: str,
    call: Any,
    request: Any,
    allowed: set[Code],
    *,
    stream: bool = False,
    field_required: bool = True,
) -> tuple[Code, Any]:
    """Make the call, check its status against `allowed`, then check that a good request still
    works. Returns the code and the response (or the error). INVALID_ARGUMENT must name the
    field at fault, unless `field_required` is false (bytes that are no message at all)."""
    result: Any = None
    try:
        async with asyncio.timeout(CALL_TIMEOUT):
            if stream:
                result = [event async for event in call]
            else:
                result = await call
        code = Code.OK
    except grpc.aio.AioRpcError as error:
        code, result = error.code(), error
    finally:
        if stream:
            call.cancel()
    with target.lock:
        target.tally[test][code.name] += 1
    where = f"{method}({_describe(request)})"
    if code in (Code.UNKNOWN, Code.INTERNAL):
        raise AssertionError(
            f"{where} answered {code.name}: {result.details()!r}\n"
            f"server log:\n{target.server.tail(25)}"
        )
    if code is Code.RESOURCE_EXHAUSTED and "metadata size exceeds" in result.details():
        raise AssertionError(
            f"{where}: the error's trailers (grpc-message and grpc-status-details-bin) are "
            f"larger than a default client accepts (8 KiB soft limit), so the client got "
            f"RESOURCE_EXHAUSTED instead of the server's status: {result.details()[:300]!r}"
        )
    assert code in allowed, f"{where} answered {code.name}: {result.details()!r}"
    if code is not Code.OK:
        assert result.details(), f"{where}: {code.name} without a message"
        status = rich_status(result)  # asserts that the rich status agrees with the call's
        if code is Code.INVALID_ARGUMENT and field_required:
            assert status is not None and field_violations(result), (
                f"{where}: INVALID_ARGUMENT without a BadRequest field violation: "
                f"{result.details()!r}"
            )
        if code is Code.RESOURCE_EXHAUSTED and status is not None:
            delay = retry_delay(result)
            assert delay is not None and delay > 0, f"{where}: queue full without RetryInfo"
    canary = await stub.GetJob(scan_pb2.GetJobRequest(job_id=target.canary), timeout=10)
    assert canary.job_id == target.canary
    return code, result


# -- strategies --------------------------------------------------------------------------------

#: Any character, lone surrogates included (they cannot travel in a protobuf string: used where
#: text is hidden inside a page token, which is base64 of JSON).
ANY_CHAR = st.one_of(st.characters(), st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF))
#: Text that may hold lone surrogates (st.text leaves them out whatever its alphabet).
ANY_TEXT = st.lists(ANY_CHAR, max_size=20).map("".join)
TEXT = st.text(max_size=40)
HUGE = st.one_of(
    st.integers(min_value=4000, max_value=9000).map(lambda n: "/" + "x" * n),
    st.just("/" + "y" * 1_100_000),  # over the server's 1 MiB request limit
)
SEGMENT = st.one_of(
    st.sampled_from(["..", ".", "", "videos", "notes.txt", "v00000.mp4", "x\x00y", "a" * 300]),
    st.text(min_size=1, max_size=12),
)
INT32 = st.integers(min_value=-(2**31), max_value=2**31 - 1)
INT64 = st.integers(min_value=-(2**63), max_value=2**63 - 1)


@st.composite
def paths(draw: st.DrawFn, root: Path) -> str:
    """Relative, absolute, below the allowed root (with `..`, `.`, empty and odd segments),
    NUL bytes, huge."""
    kind = draw(st.sampled_from(["text", "absolute", "root", "root", "videos", "huge"]))
    if kind == "text":
        return draw(TEXT)
    if kind == "huge":
        return draw(HUGE)
    parts = draw(st.lists(SEGMENT, max_size=6))
    anchor = {"absolute": "", "root": str(root), "videos": f"{root}/videos"}[kind]
    path = "/".join([anchor, *parts])
    return path if path.startswith("/") else "/" + path


DURATIONS = st.one_of(
    st.none(),
    st.builds(duration_pb2.Duration, seconds=INT64, nanos=INT32),
    st.builds(
        duration_pb2.Duration,
        seconds=st.integers(min_value=-10, max_value=10**12),
        nanos=st.integers(min_value=-999_999_999, max_value=999_999_999),
    ),
    st.builds(duration_pb2.Duration, seconds=st.integers(0, 400), nanos=st.integers(0, 10**9 - 1)),
    # Valid durations, up to the largest one protobuf allows (10,000 years).
    st.builds(
        duration_pb2.Duration,
        seconds=st.integers(0, 315_576_000_000),
        nanos=st.integers(0, 10**9 - 1),
    ),
)
JOB_IDS = st.one_of(
    TEXT,
    st.from_regex(r"\Aj_[0-9A-Z]{26}\Z"),
    st.text(alphabet="0123456789ABCDEFGHJKMNPQRSTVWXYZj_", min_size=1, max_size=200),
    HUGE,
)
STATES = st.one_of(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, -1]), INT32)
PAGE_SIZES = st.one_of(st.sampled_from([0, 1, 1000, 1001, -1]), INT32)
JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**70), max_value=2**70),
        st.floats(),
        ANY_TEXT,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=3), inner, max_size=3)
    ),
    max_leaves=6,
)


#: A new value for one field of a token: text (lone surrogates included) or any JSON value.
FIELD_VALUES = st.one_of(ANY_TEXT.filter(bool), JSON_VALUES)


def _decode_token(token: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


def _encode_token(data: Any) -> str:
    raw = json.dumps(data, allow_nan=True).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@st.composite
def tampered_tokens(draw: st.DrawFn, real: str) -> str:
    """A real page token, decoded (base64 of JSON, as any client can see), with fields replaced
    by arbitrary JSON values, removed or added, or the whole document replaced; or garbled."""
    data = _decode_token(real)
    how = draw(st.sampled_from(["one", "one", "one", "some", "drop", "add", "whole", "garble"]))
    if how == "garble":
        chars = list(real)
        index = draw(st.integers(0, len(chars) - 1))
        chars[index] = draw(st.sampled_from(list("A_-=+/!.~ \x00")))
        return "".join(chars)
    if how == "whole":
        return _encode_token(draw(JSON_VALUES))
    data = dict(data)
    keys = sorted(data)
    if how == "drop":
        data.pop(draw(st.sampled_from(keys)))
    elif how == "add":
        data[draw(st.text(max_size=4))] = draw(JSON_VALUES)
    elif how == "one":
        data[draw(st.sampled_from(keys))] = draw(FIELD_VALUES)
    else:
        for key in draw(st.lists(st.sampled_from(keys), min_size=1, max_size=len(keys))):
            data[key] = draw(JSON_VALUES)
    return _encode_token(data)


# -- the tests ---------------------------------------------------------------------------------


@pytest.mark.slow
@fuzz(examples=200)
@given(data=st.data())
async def test_submit_scan_paths(target: Target, stub: Any, data: st.DataObject) -> None:
    path = data.draw(paths(target.root), label="path")
    request = scan_pb2.SubmitScanRequest(path=path)
    await answer(
        target, stub, "SubmitScan.path", "SubmitScan", stub.SubmitScan(request), request, SUBMIT
    )


@pytest.mark.slow
@fuzz(examples=150)
@given(
    data=st.data(),
    timeout=DURATIONS,
    priority=st.one_of(st.integers(-101, 101), INT32),
    request_id=st.one_of(st.just(""), TEXT, st.text(min_size=120, max_size=140), HUGE),
    recursive=st.one_of(st.none(), st.booleans()),
    follow_symlinks=st.booleans(),
    full=st.booleans(),
)
async def test_submit_scan_options(
    target: Target,
    stub: Any,
    data: st.DataObject,
    timeout: duration_pb2.Duration | None,
    priority: int,
    request_id: str,
    recursive: bool | None,
    follow_symlinks: bool,
    full: bool,
) -> None:
    folder = data.draw(st.sampled_from(["videos", ".", "videos/..", "videos/./"]), label="folder")
    request = scan_pb2.SubmitScanRequest(
        path=f"{target.root}/{folder}",
        priority=priority,
        request_id=request_id,
        follow_symlinks=follow_symlinks,
        full=full,
    )
    if timeout is not None:
        request.timeout.CopyFrom(timeout)
    if recursive is not None:
        request.recursive = recursive
    code, response = await answer(
        target, stub, "SubmitScan.options", "SubmitScan", stub.SubmitScan(request), request, SUBMIT
    )
    if code is Code.OK and request_id:
        # AIP-155: the same request with the same request_id is the same job.
        again = await stub.SubmitScan(request, timeout=10)
        assert again.job_id == response.job_id, (request_id, again.job_id, response.job_id)


METHODS_BY_ID = {
    "GetJob": scan_pb2.GetJobRequest,
    "CancelJob": scan_pb2.CancelJobRequest,
    "DeleteJob": scan_pb2.DeleteJobRequest,
}


@pytest.mark.slow
@fuzz(examples=200)
@given(data=st.data(), method=st.sampled_from(sorted(METHODS_BY_ID)), job_id=JOB_IDS)
async def test_job_rpcs(
    target: Target, stub: Any, data: st.DataObject, method: str, job_id: str
) -> None:
    if data.draw(st.booleans(), label="a known job"):
        known = target.spare if method == "DeleteJob" else [target.canary, *target.spare]
        job_id = data.draw(st.sampled_from(known), label="known job_id")
    request = METHODS_BY_ID[method](job_id=job_id)
    await answer(target, stub, method, method, getattr(stub, method)(request), request, BY_ID)


@pytest.mark.slow
@fuzz(examples=120)
@given(data=st.data(), job_id=JOB_IDS, after_sequence=st.one_of(st.integers(-3, 40), INT64))
async def test_watch_job(
    target: Target, stub: Any, data: st.DataObject, job_id: str, after_sequence: int
) -> None:
    if data.draw(st.booleans(), label="a known job"):
        job_id = data.draw(st.sampled_from([target.canary, *target.spare]), label="known job_id")
    request = scan_pb2.WatchJobRequest(job_id=job_id, after_sequence=after_sequence)
    code, events = await answer(
        target, stub, "WatchJob", "WatchJob", stub.WatchJob(request), request, BY_ID, stream=True
    )
    if code is Code.OK:
        # A finished job: a snapshot, or exactly the stored events after after_sequence.
        assert events, request
        if events[0].WhichOneof("kind") != "snapshot":
            assert [e.sequence for e in events] == list(
                range(after_sequence + 1, after_sequence + 1 + len(events))
            )


@pytest.mark.slow
@fuzz(examples=150)
@given(
    data=st.data(),
    fuzzed=st.sets(st.sampled_from(["state", "page_size", "page_token"]), min_size=1),
)
async def test_list_jobs(target: Target, stub: Any, data: st.DataObject, fuzzed: set[str]) -> None:
    """Some fields fuzzed (so that each can get past the others' checks), the rest valid."""
    state = data.draw(STATES, label="state") if "state" in fuzzed else 0
    page_size = data.draw(PAGE_SIZES, label="page_size") if "page_size" in fuzzed else 10
    page_token = ""
    if "page_token" in fuzzed:
        page_token = data.draw(
            st.one_of(TEXT, HUGE, st.just(target.jobs_token), tampered_tokens(target.jobs_token)),
            label="page_token",
        )
    request = scan_pb2.ListJobsRequest(state=state, page_size=page_size, page_token=page_token)  # type: ignore[arg-type]
    code, response = await answer(
        target, stub, "ListJobs", "ListJobs", stub.ListJobs(request), request, LISTING
    )
    if code is Code.OK:
        assert len(response.jobs) <= min(page_size or 50, 1000)
        if state:
            assert all(job.state == state for job in response.jobs)


VIDEO_FIELDS = [
    "path_prefix",
    "video_codec",
    "min_duration",
    "max_duration",
    "page_size",
    "page_token",
]


@pytest.mark.slow
@fuzz(examples=150)
@given(data=st.data(), fuzzed=st.sets(st.sampled_from(VIDEO_FIELDS), min_size=1))
async def test_list_videos(
    target: Target, stub: Any, data: st.DataObject, fuzzed: set[str]
) -> None:
    """Some fields fuzzed (so that each can get past the others' checks), the rest valid."""
    request = scan_pb2.ListVideosRequest(page_size=10)
    if "path_prefix" in fuzzed:
        request.path_prefix = data.draw(paths(target.root), label="path_prefix")
    if "video_codec" in fuzzed:
        request.video_codec = data.draw(st.one_of(st.just("h264"), TEXT), label="video_codec")
    for field in ("min_duration", "max_duration"):
        if field in fuzzed:
            value = data.draw(DURATIONS.filter(lambda d: d is not None), label=field)
            getattr(request, field).CopyFrom(value)
    if "page_size" in fuzzed:
        request.page_size = data.draw(PAGE_SIZES, label="page_size")
    if "page_token" in fuzzed:
        request.page_token = data.draw(st.one_of(TEXT, HUGE), label="page_token")
    code, response = await answer(
        target, stub, "ListVideos", "ListVideos", stub.ListVideos(request), request, LISTING
    )
    if code is Code.OK:
        assert len(response.videos) <= min(request.page_size or 100, 1000)


@pytest.mark.slow
@fuzz(examples=100)
@given(data=st.data())
async def test_page_tokens_tampered(target: Target, stub: Any, data: st.DataObject) -> None:
    """The page tokens are base64 of JSON: a client can read and rewrite them. A rewritten token
    is INVALID_ARGUMENT or a page, whatever it holds."""
    if data.draw(st.booleans(), label="ListJobs"):
        token = data.draw(tampered_tokens(target.jobs_token), label="page_token")
        request: Any = scan_pb2.ListJobsRequest(page_size=1, page_token=token)
        method = "ListJobs"
    else:
        token = data.draw(tampered_tokens(target.videos_token), label="page_token")
        request = scan_pb2.ListVideosRequest(page_size=1, page_token=token)
        method = "ListVideos"
    call = getattr(stub, method)(request)
    await answer(target, stub, "tampered page_token", method, call, request, LISTING)


VIDEO_NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.text(alphabet=st.characters(categories=["Nd", "No"]), min_size=1, max_size=20),
    st.text(alphabet="0123456789", min_size=17, max_size=22),
)


@pytest.mark.slow
@fuzz(examples=150)
@given(data=st.data())
async def test_get_video(target: Target, stub: Any, data: st.DataObject) -> None:
    kind = data.draw(st.sampled_from(["id", "id", "path", "both", "neither"]), label="kind")
    video_id = path = ""
    if kind in ("id", "both"):
        video_id = data.draw(
            st.one_of(TEXT, HUGE, VIDEO_NUMBERS.map(lambda n: "v_" + n), VIDEO_NUMBERS),
            label="video_id",
        )
    if kind in ("path", "both"):
        path = data.draw(paths(target.root), label="path")
    request = scan_pb2.GetVideoRequest(video_id=video_id, path=path)
    await answer(target, stub, "GetVideo", "GetVideo", stub.GetVideo(request), request, GET_VIDEO)


# -- bytes that are not a valid request ----------------------------------------------------------

#: method: (streaming, the codes it may answer, its string fields' numbers)
RAW_METHODS: dict[str, tuple[bool, set[Code], tuple[int, ...]]] = {
    "SubmitScan": (False, SUBMIT, (1, 5)),
    "GetJob": (False, BY_ID, (1,)),
    "WatchJob": (True, BY_ID, (1,)),
    "CancelJob": (False, BY_ID, (1,)),
    "ListJobs": (False, LISTING, (3,)),
    "DeleteJob": (False, BY_ID, (1,)),
    "ListVideos": (False, LISTING, (1, 3, 4)),
    "GetVideo": (False, GET_VIDEO, (1, 2)),
}

BAD_UTF8 = [b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe2\x82", b"\xf8\x88\x80\x80\x80", b"\x80"]


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


@st.composite
def invalid_utf8_field(draw: st.DrawFn, fields: tuple[int, ...]) -> bytes:
    """A well-formed message whose string field holds bytes that are not UTF-8."""
    text = (
        draw(st.binary(max_size=12))
        + draw(st.sampled_from(BAD_UTF8))
        + draw(st.binary(max_size=12))
    )
    field = draw(st.sampled_from(fields))
    return _varint(field << 3 | 2) + _varint(len(text)) + text


@pytest.mark.slow
@fuzz(examples=150)
@given(data=st.data(), method=st.sampled_from(sorted(RAW_METHODS)))
async def test_undecodable_requests(
    target: Target, stub: Any, data: st.DataObject, method: str
) -> None:
    """Bytes that do not parse as the request: invalid UTF-8 in a string field (proto3 strings
    must be UTF-8), or arbitrary bytes. The caller sent a bad request: INVALID_ARGUMENT."""
    streaming, allowed, fields = RAW_METHODS[method]
    raw = data.draw(
        st.one_of(invalid_utf8_field(fields), st.binary(min_size=1, max_size=64)), label="bytes"
    )
    channel = grpc.aio.insecure_channel(target.server.address)
    try:
        factory = channel.unary_stream if streaming else channel.unary_unary
        call = factory(
            f"/mediascan.v1.ScanService/{method}",
            request_serializer=lambda b: b,
            response_deserializer=lambda b: b,
        )(raw)
        code, _ = await answer(
            target,
            stub,
            "undecodable bytes",
            method,
            call,
            raw,
            allowed,
            stream=streaming,
            field_required=False,
        )
    finally:
        await channel.close(None)
    if code is not Code.OK and not _is_utf8(raw):
        assert code in (Code.INVALID_ARGUMENT, Code.RESOURCE_EXHAUSTED), (method, raw, code)


# -- the inputs the fuzzing found -------------------------------------------------------------


def _video_token_with_path(real: str, path: str) -> str:
    data = _decode_token(real)
    data["p"] = path
    return _encode_token(data)


def _jobs_token_with_job_id(real: str, job_id: str) -> str:
    data = _decode_token(real)
    data["j"] = job_id
    return _encode_token(data)


FOUND: list[tuple[str, Any]] = [
    # int("²") raises although "²".isdigit() is True (service.py, GetVideo).
    (
        "get-video-superscript-digit",
        lambda t: ("GetVideo", scan_pb2.GetVideoRequest(video_id="v_²")),
    ),
    (
        "list-videos-min-duration-past-int64-ns",
        lambda t: (
            "ListVideos",
            scan_pb2.ListVideosRequest(min_duration=duration_pb2.Duration(seconds=10**10)),
        ),
    ),
    (
        "list-videos-max-duration-past-int64-ns",
        lambda t: (
            "ListVideos",
            scan_pb2.ListVideosRequest(max_duration=duration_pb2.Duration(seconds=315_576_000_000)),
        ),
    ),
    (
        "list-videos-token-with-lone-surrogate",
        lambda t: (
            "ListVideos",
            scan_pb2.ListVideosRequest(
                page_size=1, page_token=_video_token_with_path(t.videos_token, "\ud800")
            ),
        ),
    ),
    (
        "list-jobs-token-with-lone-surrogate",
        lambda t: (
            "ListJobs",
            scan_pb2.ListJobsRequest(
                page_size=1, page_token=_jobs_token_with_job_id(t.jobs_token, "\udfff")
            ),
        ),
    ),
]


@pytest.mark.parametrize("make", [case[1] for case in FOUND], ids=[case[0] for case in FOUND])
async def test_inputs_found_by_fuzzing(target: Target, stub: Any, make: Any) -> None:
    method, request = make(target)
    allowed = {"GetVideo": GET_VIDEO, "ListVideos": LISTING, "ListJobs": LISTING}[method]
    await answer(target, stub, "found", method, getattr(stub, method)(request), request, allowed)


async def test_invalid_utf8_is_invalid_argument(target: Target, stub: Any) -> None:
    """A request whose string field is not UTF-8 (a client bug any language can make with raw
    bytes) is the caller's fault: INVALID_ARGUMENT, for every method."""
    answers = {}
    for method, (streaming, _, fields) in sorted(RAW_METHODS.items()):
        raw = _varint(fields[0] << 3 | 2) + _varint(3) + b"/\xc3\x28"
        async with grpc.aio.insecure_channel(target.server.address) as channel:
            factory = channel.unary_stream if streaming else channel.unary_unary
            call = factory(
                f"/mediascan.v1.ScanService/{method}",
                request_serializer=lambda b: b,
                response_deserializer=lambda b: b,
            )(raw)
            try:
                if streaming:
                    async for _ in call:
                        pass
                else:
                    await call
                answers[method] = "OK"
            except grpc.aio.AioRpcError as error:
                answers[method] = f"{error.code().name}: {error.details()}"
    wrong = {m: a for m, a in answers.items() if not a.startswith("INVALID_ARGUMENT")}
    assert not wrong, f"expected INVALID_ARGUMENT from every method, got {wrong}"


#: gRPC's default limit on the metadata (trailers included) a client accepts: past this soft
#: limit a call fails with RESOURCE_EXHAUSTED at random, and always past twice that.
CLIENT_METADATA_SOFT_LIMIT = 8192


async def test_error_trailers_fit_a_default_client(target: Target) -> None:
    """An error's message and rich details travel as trailers. When they echo a long input in
    full, a default client cannot read them: it gets RESOURCE_EXHAUSTED instead of the server's
    status (the fuzzing found this). Read here by a client that accepts large metadata, and
    measured as on the wire (grpc-status-details-bin is base64)."""
    long_outside = "/" + "x" * 4095
    long_inside = f"{target.root}/" + "y" * (4095 - len(str(target.root)))
    cases = [
        ("SubmitScan", scan_pb2.SubmitScanRequest(path=long_outside)),
        ("SubmitScan", scan_pb2.SubmitScanRequest(path=long_inside)),
        ("GetVideo", scan_pb2.GetVideoRequest(video_id="v" * 4000)),
        ("GetVideo", scan_pb2.GetVideoRequest(path=long_outside)),
    ]
    options = [("grpc.max_metadata_size", 1 << 20), ("grpc.absolute_max_metadata_size", 1 << 20)]
    too_big = []
    async with grpc.aio.insecure_channel(target.server.address, options=options) as channel:
        big_stub = scan_pb2_grpc.ScanServiceStub(channel)
        for method, request in cases:
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await getattr(big_stub, method)(request)
            error = info.value
            size = len(error.details().encode())
            for key, value in error.trailing_metadata() or ():
                size += len(key) + (-(-len(value) // 3) * 4 if key.endswith("-bin") else len(value))
            if size >= CLIENT_METADATA_SOFT_LIMIT - 256:
                field = next(iter(request.ListFields()))[0].name
                too_big.append(
                    f"{method}({field}: {len(getattr(request, field))} chars) -> "
                    f"{error.code().name} with {size} bytes of trailers"
                )
    assert not too_big, (
        "error trailers over the default client's 8 KiB metadata limit:\n" + "\n".join(too_big)
    )


def test_zz_fuzz_figures(target: Target) -> None:
    """Record how many inputs each fuzz test sent and how the server answered (runs last in
    this module: pytest keeps the file's order)."""
    with target.lock:
        tally = {test: dict(codes) for test, codes in target.tally.items()}
    total = sum(sum(codes.values()) for codes in tally.values())
    record_figures("test_fuzz", inputs=total, by_test=tally, server_alive=target.server.alive())
    assert target.server.alive(), target.server.tail()
