"""Scans of real folders: exact counts, per-file errors, the library, rescans."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import grpc
import pytest

from mediascan.server.testing import (
    Corpus,
    event_job,
    final_job,
    make_many,
    make_video,
    watch_events,
)
from mediascan.v1 import scan_pb2

#: The contract holds on both backends (tests/conftest.py `backend`).
pytestmark = pytest.mark.both_backends

SUCCEEDED = scan_pb2.JOB_STATE_SUCCEEDED


def resolved(paths: Any) -> set[str]:
    return {str(Path(p).resolve()) for p in paths}


async def scan(stub: Any, path: Path, **fields: Any) -> scan_pb2.Job:
    response = await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(path), **fields))
    return await final_job(stub, response.job_id)


async def list_videos(stub: Any, prefix: Path | str = "", page_size: int = 0) -> list[Any]:
    videos: list[Any] = []
    token = ""
    for _ in range(10_000):
        page = await stub.ListVideos(
            scan_pb2.ListVideosRequest(
                path_prefix=str(prefix), page_size=page_size, page_token=token
            )
        )
        videos.extend(page.videos)
        token = page.next_page_token
        if not token:
            return videos
    raise AssertionError("ListVideos never returned an empty next_page_token")


async def test_scan_of_corpus_has_exact_counts_and_file_errors(stub: Any, corpus: Corpus) -> None:
    response = await stub.SubmitScan(scan_pb2.SubmitScanRequest(path=str(corpus.root)))
    # Resuming after event 1 (the job's creation) replays every later event from the job's log.
    events = await watch_events(stub, response.job_id, after_sequence=1)
    assert [e.sequence for e in events] == list(range(2, len(events) + 2))
    first = events[0]
    assert first.WhichOneof("kind") == "state_change"
    assert (first.state_change.from_state, first.state_change.to_state) == (
        scan_pb2.JOB_STATE_QUEUED,
        scan_pb2.JOB_STATE_RUNNING,
    )
    job = event_job(events[-1])
    assert job is not None
    assert job.state == SUCCEEDED, job
    assert not job.HasField("error")

    result = job.result
    assert job.HasField("result")
    assert result.files_total == len(corpus.valid) + len(corpus.bad)
    assert result.added == len(corpus.valid)
    assert result.failed == len(corpus.bad)
    assert (result.updated, result.unchanged, result.removed) == (0, 0, 0)
    assert result.bytes_total == sum(p.stat().st_size for p in corpus.video_files)

    # One per-file error per bad file, naming it, with a real status; ignored files never appear.
    assert not result.file_errors_truncated
    assert [e.path for e in result.file_errors] != []
    assert sorted(e.path for e in result.file_errors) == sorted(resolved(corpus.bad))
    for error in result.file_errors:
        assert error.status.code != grpc.StatusCode.OK.value[0], error
        assert error.status.message, error

    # The stream reported the same file errors as events, once each.
    streamed = [e.file_error for e in events if e.WhichOneof("kind") == "file_error"]
    assert sorted(e.path for e in streamed) == sorted(resolved(corpus.bad))
    assert job.last_sequence == events[-1].sequence

    progress = job.progress
    assert progress.files_total == result.files_total
    assert progress.files_done == result.files_total
    assert progress.fraction == pytest.approx(1.0)
    assert (progress.added, progress.failed) == (result.added, result.failed)
    assert job.HasField("start_time") and job.HasField("end_time")
    assert job.end_time.ToNanoseconds() >= job.start_time.ToNanoseconds()


async def test_rescan_of_unchanged_corpus_reports_unchanged(stub: Any, corpus: Corpus) -> None:
    first = await scan(stub, corpus.root)
    assert first.state == SUCCEEDED
    assert first.result.added == len(corpus.valid)

    second = await scan(stub, corpus.root)
    assert second.job_id != first.job_id
    assert second.state == SUCCEEDED
    assert second.result.files_total == len(corpus.valid) + len(corpus.bad)
    assert second.result.unchanged == len(corpus.valid)
    assert second.result.added == 0
    assert second.result.updated == 0
    assert second.result.removed == 0
    assert second.result.failed == len(corpus.bad)


async def test_library_holds_what_the_probe_read(stub: Any, corpus: Corpus) -> None:
    job = await scan(stub, corpus.root)
    assert job.state == SUCCEEDED

    videos = await list_videos(stub, corpus.root.resolve())
    assert [v.path for v in videos] == sorted(resolved(corpus.valid))
    by_path = {v.path: v for v in videos}
    for spec in corpus.specs:
        video = by_path[str(spec.path.resolve())]
        where = spec.path.name
        assert video.video_id, where
        assert video.job_id == job.job_id, where
        assert video.size_bytes == spec.path.stat().st_size, where
        assert video.container == spec.container, where
        assert video.video_codec == spec.video_codec, where
        assert (video.width, video.height) == (spec.width, spec.height), where
        assert video.frame_rate == pytest.approx(spec.fps, rel=0.01), where
        assert video.duration.ToNanoseconds() / 1e9 == pytest.approx(spec.seconds, abs=0.15), where
        assert video.audio_streams == spec.audio_streams, where
        assert video.audio_codec == spec.audio_codec, where
        assert video.audio_sample_rate == spec.sample_rate, where
        assert video.audio_channels == spec.audio_channels, where
        assert video.HasField("probe_time") and video.HasField("modify_time"), where

    two_audio = next(s for s in corpus.specs if s.audio_streams == 2)
    assert by_path[str(two_audio.path.resolve())].audio_streams == 2
    odd = next(s for s in corpus.specs if s.width == 322)
    assert (by_path[str(odd.path.resolve())].width, by_path[str(odd.path.resolve())].height) == (
        322,
        180,
    )

    # GetVideo by path and by id returns the same entry; files that failed are not in it.
    some = videos[0]
    assert await stub.GetVideo(scan_pb2.GetVideoRequest(path=some.path)) == some
    assert await stub.GetVideo(scan_pb2.GetVideoRequest(video_id=some.video_id)) == some
    for bad in corpus.bad:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetVideo(scan_pb2.GetVideoRequest(path=str(bad.resolve())))
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_list_videos_pages_in_path_order(stub: Any, corpus: Corpus) -> None:
    assert (await scan(stub, corpus.root)).state == SUCCEEDED
    paged = await list_videos(stub, corpus.root.resolve(), page_size=2)
    assert [v.path for v in paged] == sorted(resolved(corpus.valid))
    movies = await list_videos(stub, (corpus.root / "movies").resolve())
    assert {v.path for v in movies} == {
        p for p in resolved(corpus.valid) if p.startswith(str((corpus.root / "movies").resolve()))
    }
    assert movies


async def test_non_recursive_scan_counts_only_top_level_files(stub: Any, corpus: Corpus) -> None:
    top_level = [p for p in corpus.video_files if p.parent == corpus.root]
    assert 0 < len(top_level) < len(corpus.video_files)
    job = await scan(stub, corpus.root, recursive=False)
    assert job.state == SUCCEEDED
    assert job.options.recursive is False
    assert job.result.files_total == len(top_level)
    assert job.result.added == len([p for p in corpus.valid if p.parent == corpus.root])


async def test_folder_without_videos_succeeds_with_zero_counts(stub: Any, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("text")
    (folder / "sub" / "b.jpg").write_bytes(b"\xff\xd8\xff\xd9")
    (folder / "mp4").write_text("a file named like an extension, without one")
    job = await scan(stub, folder)
    assert job.state == SUCCEEDED
    assert job.result.files_total == 0
    assert job.result.added == job.result.failed == 0


async def test_rescan_counts_added_updated_and_unchanged(stub: Any, tmp_path: Path) -> None:
    folder = tmp_path / "lib"
    kept, changed = make_many(folder, 2)
    first = await scan(stub, folder)
    assert first.state == SUCCEEDED
    assert first.result.added == 2

    make_video(changed, width=96, height=64, seconds=0.4)  # new content, new size and mtime
    added = folder / "new.mkv"
    make_video(added, width=80, height=60, seconds=0.2)
    second = await scan(stub, folder)
    assert second.state == SUCCEEDED
    result = second.result
    assert (result.files_total, result.added, result.updated, result.unchanged, result.failed) == (
        3,
        1,
        1,
        1,
        0,
    )
    videos = await list_videos(stub, folder.resolve())
    assert sorted(v.path for v in videos) == sorted(resolved([kept, changed, added]))
    video = await stub.GetVideo(scan_pb2.GetVideoRequest(path=str(changed.resolve())))
    assert (video.width, video.height) == (96, 64)
    assert video.job_id == second.job_id


async def test_rescan_removes_vanished_files_from_the_library(stub: Any, tmp_path: Path) -> None:
    """Contract (scan.proto Progress.removed / ScanResult.removed): a video whose file is gone
    is removed from the library by the next scan of its folder, and counted."""
    folder = tmp_path / "lib"
    kept, gone = make_many(folder, 2)
    assert (await scan(stub, folder)).result.added == 2
    gone.unlink()
    second = await scan(stub, folder)
    assert second.state == SUCCEEDED
    assert (second.result.files_total, second.result.unchanged, second.result.removed) == (1, 1, 1)
    videos = await list_videos(stub, folder.resolve())
    assert [v.path for v in videos] == [str(kept.resolve())]
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.GetVideo(scan_pb2.GetVideoRequest(path=str(gone.resolve())))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_full_rescan_probes_unchanged_files_again(stub: Any, tmp_path: Path) -> None:
    folder = tmp_path / "lib"
    make_many(folder, 2)
    first = await scan(stub, folder)
    assert first.result.added == 2
    quick = await scan(stub, folder)
    assert quick.result.unchanged == 2
    path = str((folder / "v00000.mp4").resolve())
    assert (await stub.GetVideo(scan_pb2.GetVideoRequest(path=path))).job_id == first.job_id
    full = await scan(stub, folder, full=True)
    assert full.state == SUCCEEDED
    assert full.options.full is True
    assert full.result.files_total == 2
    assert full.result.unchanged + full.result.updated == 2
    video = await stub.GetVideo(scan_pb2.GetVideoRequest(path=path))
    assert video.job_id == full.job_id  # probed again by the full scan
