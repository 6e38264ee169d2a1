"""DECODE verification (issue 14, section 3): real files made with PyAV (a healthy one, one
damaged in the middle, a truncated copy), scanned with `verify: VERIFY_DECODE` over gRPC; the
video's `health`, the job's warnings, the health filter, which rescans decode again, a decode's
time limit, and a cancel that kills the decode at once while ordinary probes go on."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path
from typing import Any

import grpc
import pytest
from _library_helpers import (
    CANCELLED,
    SHORT_PROBE_TIMEOUT,
    SUCCEEDED,
    all_videos,
    cancel,
    errors_by_path,
    real,
    scan,
    set_fault,
    submit,
    tiny_video,
)

from mediascan.server import decode_check
from mediascan.server.testing import field_violations, make_video, wait_for_running
from mediascan.server.testing_prober import HANG_SIGNAL
from mediascan.server.verify import Verifier
from mediascan.v1 import scan_pb2

pytestmark = pytest.mark.both_backends

DECODE = scan_pb2.VERIFY_DECODE
OK, WARNINGS, CORRUPT = scan_pb2.HEALTH_OK, scan_pb2.HEALTH_WARNINGS, scan_pb2.HEALTH_CORRUPT
HANG_DECODE = "DECODE-HANGS-HERE"


def damaged_copy(source: Path, target: Path, *, at: float, length: int) -> Path:
    """`source` with `length` bytes flipped from `at` (a share of its size) on."""
    data = bytearray(source.read_bytes())
    start = int(len(data) * at)
    for i in range(start, min(len(data), start + length)):
        data[i] ^= 0x5A
    target.write_bytes(bytes(data))
    return target


def make_health_files(folder: Path) -> dict[str, Path]:
    """good.mp4 (3 s, H.264 + AAC), mid.mp4 (3 KB damaged at half: decodes with errors) and
    half.mkv (the first half of a Matroska file whose header says 3 s)."""
    folder.mkdir(parents=True, exist_ok=True)
    good = folder / "good.mp4"
    make_video(good, seconds=3, audio_codec="aac")
    mkv = folder.parent / "whole.mkv"
    make_video(mkv, seconds=3, audio_codec="aac")
    data = mkv.read_bytes()
    (folder / "half.mkv").write_bytes(data[: len(data) // 2])
    return {
        "good": good,
        "mid": damaged_copy(good, folder / "mid.mp4", at=0.5, length=3000),
        "half": folder / "half.mkv",
    }


def ffmpeg_errors(path: Path) -> int:
    """Lines `ffmpeg -v error -i FILE -f null -` prints (Debian's FFmpeg)."""
    run = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return len(run.stderr.splitlines())


async def videos_by_name(stub: Any, folder: Path, **filters: Any) -> dict[str, Any]:
    videos = await all_videos(stub, path_prefix=real(folder), **filters)
    return {Path(v.path).name: v for v in videos}


async def test_a_decode_scan_stores_health_warns_and_filters(stub: Any, tmp_path: Path) -> None:
    files = make_health_files(tmp_path / "lib")
    job = await scan(stub, tmp_path / "lib", verify=DECODE)
    assert job.state == SUCCEEDED
    assert job.options.verify == DECODE
    assert (job.result.added, job.result.failed) == (3, 0)  # warnings fail nothing
    errors = errors_by_path(job)
    assert set(errors) == {real(files["mid"]), real(files["half"])}
    assert errors[real(files["mid"])][0] == grpc.StatusCode.DATA_LOSS
    assert "decoded with" in errors[real(files["mid"])][1]
    assert "corrupt" in errors[real(files["half"])][1]

    videos = await videos_by_name(stub, tmp_path / "lib")
    assert {name: v.health for name, v in videos.items()} == {
        "good.mp4": OK,
        "mid.mp4": WARNINGS,
        "half.mkv": CORRUPT,
    }
    good, mid = videos["good.mp4"].health_report, videos["mid.mp4"].health_report
    assert good.error_count == 0 and not good.HasField("first_error_at")
    assert good.verify_time.ToNanoseconds() > 0
    assert mid.error_count > 0 and mid.messages and len(mid.messages) <= 5
    # The damage sits at half of the file: the first error is met inside the video.
    assert 0 < mid.first_error_at.ToNanoseconds() < videos["mid.mp4"].duration.ToNanoseconds()
    # ffmpeg agrees on which files have errors (the counts differ a little between versions).
    assert ffmpeg_errors(files["good"]) == 0
    assert ffmpeg_errors(files["mid"]) > 0

    for health, name in ((OK, "good.mp4"), (WARNINGS, "mid.mp4"), (CORRUPT, "half.mkv")):
        assert list(await videos_by_name(stub, tmp_path / "lib", health=health)) == [name]


async def test_which_rescans_decode_again(stub: Any, tmp_path: Path) -> None:
    folder = tmp_path / "lib"
    first, second = tiny_video(folder / "a.mp4"), tiny_video(folder / "b.mp4")
    await scan(stub, folder)  # VERIFY_NONE: health unknown
    assert {v.health for v in (await videos_by_name(stub, folder)).values()} == {0}

    # A DECODE rescan verifies the unchanged videos never verified, without probing them.
    job = await scan(stub, folder, verify=DECODE)
    assert (job.result.unchanged, job.result.added, job.result.updated) == (2, 0, 0)
    verified = await videos_by_name(stub, folder)
    assert {v.health for v in verified.values()} == {OK}
    times = {n: v.health_report.verify_time.ToNanoseconds() for n, v in verified.items()}

    # Verified and unchanged: not decoded again (its verification time stays).
    job = await scan(stub, folder, verify=DECODE)
    assert job.result.unchanged == 2
    again = await videos_by_name(stub, folder)
    assert {n: v.health_report.verify_time.ToNanoseconds() for n, v in again.items()} == times

    # A full plain rescan probes again but keeps the health of files whose content is the same.
    await scan(stub, folder, full=True)
    assert {v.health for v in (await videos_by_name(stub, folder)).values()} == {OK}

    # A changed file's health is unknown again, until a DECODE scan verifies it.
    with open(second, "ab") as out:
        out.write(b"\0" * 16)
    job = await scan(stub, folder)
    assert job.result.updated == 1
    health = {n: v.health for n, v in (await videos_by_name(stub, folder)).items()}
    assert health == {first.name: OK, second.name: scan_pb2.HEALTH_UNSPECIFIED}


async def test_bad_verify_and_health_values_name_the_field(stub: Any, tmp_path: Path) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await submit(stub, tmp_path, verify=7)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "VERIFY_DECODE" in field_violations(raised.value)["verify"]
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.ListVideos(scan_pb2.ListVideosRequest(health=9))
    assert "HEALTH_OK" in field_violations(raised.value)["health"]


def test_the_health_values_of_the_prober_are_the_contracts() -> None:
    assert (decode_check.OK, decode_check.WARNINGS, decode_check.CORRUPT) == (OK, WARNINGS, CORRUPT)


def test_a_decode_may_take_a_multiple_of_the_video_duration() -> None:
    verifier = Verifier(None, base=30.0, ratio=3.0)  # type: ignore[arg-type]
    assert verifier.limit(0) == 30.0
    assert verifier.limit(7_200_000_000_000) == 30.0 + 3 * 7200  # a two-hour film: 6 h 0.5 min


# -- the verification probers: cancelled, timed out, and never in the way of probes ------------


async def hanging_decode(fifo: Path) -> str:
    """What the test prober writes to `fifo` once it hangs in a decode: its pid and the path."""

    def read() -> str:
        with open(fifo) as signal:
            return signal.readline()

    async with asyncio.timeout(60):
        return await asyncio.to_thread(read)


async def process_ended(pid: int, timeout: float = 30.0) -> None:
    """Wait (on a pidfd, no polling) until process `pid` has exited."""
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    loop = asyncio.get_running_loop()
    ended = asyncio.Event()
    loop.add_reader(pidfd, ended.set)
    try:
        async with asyncio.timeout(timeout):
            await ended.wait()
    finally:
        loop.remove_reader(pidfd)
        os.close(pidfd)


@pytest.fixture
def decode_hangs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Servers started afterwards decode-hang on HANG_DECODE files, telling the FIFO it returns."""
    set_fault(monkeypatch, "hang-decode", HANG_DECODE)
    fifo = tmp_path / "hanging"
    os.mkfifo(fifo)
    monkeypatch.setenv(HANG_SIGNAL, str(fifo))
    return fifo


async def test_a_cancel_kills_the_decode_and_probes_go_on_meanwhile(
    decode_hangs: Path, make_server: Any, connect: Any, tmp_path: Path
) -> None:
    server = await make_server(probe_timeout=120.0, verify_workers=1, shutdown_grace=0.5)
    stub = await connect(server.address)
    tiny_video(tmp_path / "slow" / f"{HANG_DECODE}.mp4")
    job_id = (await submit(stub, tmp_path / "slow", verify=DECODE)).job_id
    await wait_for_running(stub, job_id)
    pid, _, path = (await hanging_decode(decode_hangs)).strip().partition(" ")
    assert path.endswith(f"{HANG_DECODE}.mp4")

    # The only verification prober is busy: a plain scan still probes (its own probers).
    make_video(tmp_path / "other" / "x.mp4", seconds=0.2, width=64, height=48)
    other = await scan(stub, tmp_path / "other")
    assert (other.state, other.result.added) == (SUCCEEDED, 1)

    loop = asyncio.get_running_loop()
    started = loop.time()
    stopped = await cancel(stub, job_id)
    assert stopped.state == CANCELLED
    await process_ended(int(pid))  # the decode's prober was killed, not left running
    assert loop.time() - started < 20


async def test_a_decode_past_its_time_limit_is_stopped_and_the_video_kept(
    decode_hangs: Path, make_server: Any, connect: Any, tmp_path: Path
) -> None:
    server = await make_server(probe_timeout=SHORT_PROBE_TIMEOUT, verify_time_ratio=0.5)
    stub = await connect(server.address)
    video = tiny_video(tmp_path / "lib" / f"{HANG_DECODE}.mp4")
    job = await scan(stub, tmp_path / "lib", verify=DECODE)
    assert (job.state, job.result.added, job.result.failed) == (SUCCEEDED, 1, 0)
    code, message = errors_by_path(job)[real(video)]
    assert code == grpc.StatusCode.DATA_LOSS
    assert "could not be verified by decoding" in message and "took longer than" in message
    (stored,) = (await videos_by_name(stub, tmp_path / "lib")).values()
    assert stored.health == scan_pb2.HEALTH_UNSPECIFIED
