"""The library RPCs (issue 3, section 5): ListVideos filters (path prefix on whole components,
codec, duration), path order, page sizes and page tokens bound to their filters (AIP-158), and
GetVideo by id or by path."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from _library_helpers import SUCCEEDED, all_videos, real, scan, tiny_video, video_row

from mediascan.server.store import Store, library_key, library_key_path
from mediascan.server.store.sqlite import library as store_module
from mediascan.server.testing import duration, field_violations, make_many, make_video
from mediascan.v1 import scan_pb2

#: The contract holds on both backends (tests/conftest.py `backend`).
pytestmark = pytest.mark.both_backends

ARGUMENT = grpc.StatusCode.INVALID_ARGUMENT


@pytest.fixture
def tree(tmp_path: Path) -> dict[str, Path]:
    """Videos whose paths test prefix matching and byte order, with known codecs and
    durations."""
    lib = tmp_path / "lib"
    files = {
        "b/one": tiny_video(lib / "a" / "b" / "one.mp4", seconds=1.0),
        "b/deep": tiny_video(lib / "a" / "b" / "deep" / "two.mkv", seconds=0.4),
        "bc": tiny_video(lib / "a" / "bc" / "three.mp4"),  # "/a/bc" starts with "/a/b"
        "b.mp4": tiny_video(lib / "a" / "b.mp4"),  # so does "/a/b.mp4"
        "b c": tiny_video(lib / "a" / "b c" / "four.mp4"),  # ' ' sorts before '/'
        "b-c": tiny_video(lib / "a" / "b-c" / "five.mp4"),  # '-' too
        "vp8": tiny_video(lib / "x" / "vp8.webm", codec="libvpx", seconds=2.0),
        "mpeg4": tiny_video(lib / "x" / "mpeg4.avi", codec="mpeg4", seconds=0.6),
    }
    return {"lib": lib, **files}


@pytest.fixture
async def scanned(stub: Any, tree: dict[str, Path]) -> dict[str, Path]:
    job = await scan(stub, tree["lib"])
    assert (job.state, job.result.added, job.result.failed) == (SUCCEEDED, 8, 0), job
    return tree


def paths(videos: list[Any]) -> list[str]:
    return [v.path for v in videos]


def expect_invalid(info: pytest.ExceptionInfo[grpc.aio.AioRpcError], field: str) -> None:
    assert info.value.code() == ARGUMENT, (info.value.code(), info.value.details())
    assert field in field_violations(info.value), info.value.details()


async def test_path_prefix_matches_whole_path_components(
    stub: Any, scanned: dict[str, Path]
) -> None:
    lib = real(scanned["lib"])
    under_b = [real(scanned["b/deep"]), real(scanned["b/one"])]
    for prefix in (f"{lib}/a/b", f"{lib}/a/b/", f"{lib}/a/b//", f"{lib}/a/x/../b"):
        assert paths(await all_videos(stub, path_prefix=prefix)) == under_b, prefix
    assert paths(await all_videos(stub, path_prefix=f"{lib}/a/b/deep")) == [real(scanned["b/deep"])]
    assert paths(await all_videos(stub, path_prefix=f"{lib}/a/b c")) == [real(scanned["b c"])]
    assert paths(await all_videos(stub, path_prefix=f"{lib}/a/bc")) == [real(scanned["bc"])]
    assert await all_videos(stub, path_prefix=f"{lib}/a/b/de") == []
    assert await all_videos(stub, path_prefix=f"{lib}/nothing-here") == []
    assert len(await all_videos(stub, path_prefix=f"{lib}/a")) == 6
    assert len(await all_videos(stub, path_prefix=lib)) == 8


async def test_videos_are_listed_in_path_order_on_every_page_size(
    stub: Any, scanned: dict[str, Path]
) -> None:
    lib = real(scanned["lib"])
    expected = sorted(real(p) for k, p in scanned.items() if k != "lib")
    # Byte order puts "b c/" and "b-c/" before "b/" and "b.mp4" before "b/": check the
    # expectation is the interesting one.
    assert expected.index(real(scanned["b c"])) < expected.index(real(scanned["b/one"]))
    for page_size in (1, 2, 3, 7, 8, 9, 0, 1000):
        listed = paths(await all_videos(stub, path_prefix=lib, page_size=page_size))
        assert listed == expected, page_size


async def test_filters_by_codec_and_duration_on_every_page(
    stub: Any, scanned: dict[str, Path]
) -> None:
    lib = real(scanned["lib"])

    async def listed(**filters: Any) -> set[str]:
        whole = await all_videos(stub, path_prefix=lib, **filters)
        paged = await all_videos(stub, path_prefix=lib, page_size=1, **filters)
        assert paths(paged) == paths(whole), filters
        return set(paths(whole))

    def names(*keys: str) -> set[str]:
        return {real(scanned[k]) for k in keys}

    h264 = names("b/one", "b/deep", "bc", "b.mp4", "b c", "b-c")
    assert await listed(video_codec="h264") == h264
    assert await listed(video_codec="vp8") == names("vp8")
    assert await listed(video_codec="mpeg4") == names("mpeg4")
    assert await listed(video_codec="hevc") == set()
    # Durations: 2.0 (vp8), 1.0 (b/one), 0.6 (mpeg4), 0.4 (b/deep), 0.2 (the rest).
    assert await listed(min_duration=duration(0.9)) == names("vp8", "b/one")
    assert await listed(max_duration=duration(0.5)) == h264 - names("b/one")
    assert await listed(min_duration=duration(0.3), max_duration=duration(1.5)) == names(
        "b/one", "b/deep", "mpeg4"
    )
    assert await listed(video_codec="h264", min_duration=duration(0.3)) == names("b/one", "b/deep")
    # The bounds are inclusive: a bound equal to a stored duration keeps that video.
    one = await stub.GetVideo(scan_pb2.GetVideoRequest(path=real(scanned["b/one"])))
    exact = one.duration
    assert await listed(min_duration=exact, max_duration=exact) == names("b/one")


async def test_page_size_defaults_to_100_and_is_capped_at_1000(stub: Any, tmp_path: Path) -> None:
    folder = tmp_path / "many"
    make_many(folder, 1100)
    job = await scan(stub, folder)
    assert (job.state, job.result.added) == (SUCCEEDED, 1100)
    prefix = real(folder)

    default = await stub.ListVideos(scan_pb2.ListVideosRequest(path_prefix=prefix))
    assert len(default.videos) == 100 and default.next_page_token
    capped = await stub.ListVideos(scan_pb2.ListVideosRequest(path_prefix=prefix, page_size=5000))
    assert len(capped.videos) == 1000 and capped.next_page_token
    rest = await stub.ListVideos(
        scan_pb2.ListVideosRequest(
            path_prefix=prefix, page_size=1000, page_token=capped.next_page_token
        )
    )
    assert len(rest.videos) == 100 and not rest.next_page_token
    everything = paths(await all_videos(stub, path_prefix=prefix))
    assert everything == sorted(real(p) for p in folder.iterdir())
    assert len(everything) == 1100
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListVideos(scan_pb2.ListVideosRequest(path_prefix=prefix, page_size=-1))
    expect_invalid(info, "page_size")


async def test_a_page_token_is_bound_to_its_filters(stub: Any, scanned: dict[str, Path]) -> None:
    lib = real(scanned["lib"])
    filters: dict[str, Any] = {
        "path_prefix": lib,
        "video_codec": "h264",
        "min_duration": duration(0.1),
        "max_duration": duration(5),
    }
    first = await stub.ListVideos(scan_pb2.ListVideosRequest(page_size=2, **filters))
    token = first.next_page_token
    assert len(first.videos) == 2 and token

    changed = [
        {**filters, "path_prefix": f"{lib}/a"},
        {**filters, "video_codec": "vp8"},
        {**filters, "video_codec": ""},
        {**filters, "min_duration": duration(0.2)},
        {k: v for k, v in filters.items() if k != "min_duration"},
        {**filters, "max_duration": duration(4)},
        {},
    ]
    for other in changed:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListVideos(scan_pb2.ListVideosRequest(page_token=token, **other))
        expect_invalid(info, "page_token")

    # The same filters continue where the first page stopped, with any page size.
    second = await stub.ListVideos(
        scan_pb2.ListVideosRequest(page_token=token, page_size=100, **filters)
    )
    assert not second.next_page_token
    whole = await all_videos(stub, **filters)
    assert paths(first.videos) + paths(second.videos) == paths(whole)
    assert len(whole) == 6


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "!!!not base64!!!",
        base64.urlsafe_b64encode(b"\xff\xfe binary").decode(),
        base64.urlsafe_b64encode(json.dumps({"hello": "world"}).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps([1, 2, 3]).encode()).decode(),
        base64.urlsafe_b64encode(json.dumps("just a string").encode()).decode(),
    ],
    ids=["word", "not-base64", "binary", "other-json", "json-list", "json-string"],
)
async def test_a_garbage_page_token_is_invalid_argument(stub: Any, token: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListVideos(scan_pb2.ListVideosRequest(page_token=token))
    expect_invalid(info, "page_token")


async def test_a_list_jobs_token_is_not_a_list_videos_token(
    stub: Any, scanned: dict[str, Path]
) -> None:
    for _ in range(2):  # a second job, so that ListJobs has a next page
        await scan(stub, scanned["lib"] / "x")
    jobs = await stub.ListJobs(scan_pb2.ListJobsRequest(page_size=1))
    assert jobs.next_page_token
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.ListVideos(scan_pb2.ListVideosRequest(page_token=jobs.next_page_token))
    expect_invalid(info, "page_token")


async def test_paging_neither_repeats_nor_skips_while_videos_are_added(
    stub: Any, scanned: dict[str, Path]
) -> None:
    lib = scanned["lib"]
    before = paths(await all_videos(stub, path_prefix=real(lib)))
    first = await stub.ListVideos(scan_pb2.ListVideosRequest(path_prefix=real(lib), page_size=3))
    # New videos sort before and after the end of the first page.
    tiny_video(lib / "0-early.mp4")
    tiny_video(lib / "a" / "b" / "zz-late.mp4")
    assert (await scan(stub, lib)).result.added == 2
    rest = await all_videos(
        stub, path_prefix=real(lib), page_size=3, page_token=first.next_page_token
    )
    seen = paths(first.videos) + paths(rest)
    assert len(seen) == len(set(seen)), seen
    assert set(before) <= set(seen)
    assert seen == sorted(seen)
    assert real(lib / "a" / "b" / "zz-late.mp4") in seen  # after the cursor: listed


async def test_get_video_by_id_or_by_path(stub: Any, scanned: dict[str, Path]) -> None:
    videos = await all_videos(stub, path_prefix=real(scanned["lib"]))
    assert len(videos) == 8
    assert len({v.video_id for v in videos}) == 8
    for video in videos:
        by_id = await stub.GetVideo(scan_pb2.GetVideoRequest(video_id=video.video_id))
        by_path = await stub.GetVideo(scan_pb2.GetVideoRequest(path=video.path))
        assert by_id == by_path == video
    vp8 = await stub.GetVideo(scan_pb2.GetVideoRequest(path=real(scanned["vp8"])))
    assert (vp8.video_codec, vp8.width, vp8.height) == ("vp8", 64, 48)
    assert vp8.duration.ToNanoseconds() / 1e9 == pytest.approx(2.0, abs=0.1)


async def test_get_video_not_found_and_invalid_requests(
    stub: Any, scanned: dict[str, Path], tmp_path: Path
) -> None:
    lib = scanned["lib"]
    never_scanned = tiny_video(tmp_path / "elsewhere" / "never.mp4")
    one = await stub.GetVideo(scan_pb2.GetVideoRequest(path=real(scanned["b/one"])))
    for request in (
        scan_pb2.GetVideoRequest(path=real(never_scanned)),  # a file, but not in the library
        scan_pb2.GetVideoRequest(path=real(lib / "a" / "b")),  # a folder of the library
        scan_pb2.GetVideoRequest(path=real(lib / "a" / "b" / "nope.mp4")),
        scan_pb2.GetVideoRequest(video_id="v_987654321"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetVideo(request)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND, request
        assert info.value.details(), request

    for request in (
        scan_pb2.GetVideoRequest(),
        scan_pb2.GetVideoRequest(video_id=one.video_id, path=one.path),
        scan_pb2.GetVideoRequest(path="a/b/one.mp4"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.GetVideo(request)
        assert info.value.code() == ARGUMENT, request
        assert field_violations(info.value), request


async def test_list_videos_rejects_bad_filters(stub: Any) -> None:
    for request, field in (
        (scan_pb2.ListVideosRequest(path_prefix="relative/folder"), "path_prefix"),
        (scan_pb2.ListVideosRequest(min_duration=duration(-1)), "min_duration"),
        (scan_pb2.ListVideosRequest(max_duration=duration(-0.5)), "max_duration"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ListVideos(request)
        expect_invalid(info, field)


async def test_the_library_reflects_what_was_rescanned(stub: Any, tmp_path: Path) -> None:
    """A video's entry follows its file: same id, new metadata, and the scan that probed it."""
    path = tiny_video(tmp_path / "lib" / "clip.mp4")
    first = await scan(stub, tmp_path / "lib")
    before = await stub.GetVideo(scan_pb2.GetVideoRequest(path=real(path)))
    assert (before.width, before.height, before.job_id) == (64, 48, first.job_id)
    make_video(path, width=128, height=96, seconds=0.5, audio_codec="aac")
    second = await scan(stub, tmp_path / "lib")
    assert second.result.updated == 1
    after = await stub.GetVideo(scan_pb2.GetVideoRequest(video_id=before.video_id))
    assert after.path == before.path
    assert (after.width, after.height, after.audio_codec, after.audio_streams) == (
        128,
        96,
        "aac",
        1,
    )
    assert after.job_id == second.job_id
    assert after.size_bytes == path.stat().st_size
    assert after.modify_time.ToNanoseconds() == path.stat().st_mtime_ns


async def test_the_library_index_holds_what_is_below_the_folder_in_chunks(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The index a scan compares with: keys of the videos strictly below the folder (directly
    in it unless recursive), read a chunk at a time, with the paths of rows without a device;
    kept until the library changes."""
    inside = [f"/m/a/x{i}.mp4" for i in range(7)] + ["/m/a/sub/y.mp4", "/m/a/sub/z/w.mp4"]
    outside = ["/m/a.mp4", "/m/a b/c.mp4", "/m/a-b/c.mp4", "/m/ab/c.mp4", "/m/a"]
    rows = [
        video_row(p, size=i, dev=0 if p.endswith("x3.mp4") else 7) for i, p in enumerate(inside)
    ]
    rows += [video_row(p, size=99) for p in outside]
    monkeypatch.setattr(store_module, "_INDEX_CHUNK", 3)
    store = Store(tmp_path / "index.db")
    await store.open()
    try:
        await store.upsert_videos(rows)
        keys = {library_key(r.path, r.size_bytes, r.mtime_ns) for r in rows[: len(inside)]}

        index = await store.library_index("/m/a", recursive=True)
        assert set(index.keys) == keys
        assert index.undated == {"/m/a/x3.mp4"}
        flat = await store.library_index("/m/a", recursive=False)
        assert set(flat.keys) == {k for k in keys if "/sub/" not in k}
        assert {library_key_path(k) for k in flat.keys} == set(inside[:7])

        assert await store.library_index("/m/a", recursive=True) is index  # kept
        new = video_row("/m/a/new.mp4", size=5)
        await store.upsert_videos([new])  # a library write: the next index is read again
        again = await store.library_index("/m/a", recursive=True)
        assert set(again.keys) == keys | {library_key(new.path, new.size_bytes, new.mtime_ns)}
    finally:
        await store.close()
