"""The docs' runnable examples run: the `ScanClient` example of docs/client.md, through a server
restart, against a real server process; the transcripts of docs/api.md are what the server
prints today."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import difflib
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from _library_helpers import real, tiny_video

from mediascan.client import ScanClient
from mediascan.v1 import scan_pb2

DOCS = Path(__file__).resolve().parent.parent / "docs"
TIMEOUT = 90.0


def python_blocks(page: Path) -> list[str]:
    """The ```python blocks of a Markdown page, in order."""
    return re.findall(r"^```python\n(.*?)^```$", page.read_text(), flags=re.S | re.M)


@pytest.mark.slow
async def test_client_example_follows_a_scan_through_a_restart(
    spawn_server: Any, big_folder: Path, tmp_path: Path
) -> None:
    example, _mirror = python_blocks(DOCS / "client.md")
    script = tmp_path / "example.py"
    script.write_text(example)
    first = await spawn_server("--shutdown-grace", "0")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        first.address,
        str(big_folder),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    assert process.stdout is not None
    lines: list[str] = []
    async with asyncio.timeout(TIMEOUT):
        while not lines or not lines[-1].startswith("progress"):
            line = await process.stdout.readline()
            assert line, (lines, await process.stderr.read() if process.stderr else b"")
            lines.append(line.decode().rstrip("\n"))
        first.terminate()
        assert await first.wait(TIMEOUT) == 0
        await spawn_server("--listen", first.address, "--shutdown-grace", "0", db=first.db)
        rest, errors = await process.communicate()
    lines += rest.decode().splitlines()
    assert process.returncode == 0, (lines, errors.decode())
    assert "ended SUCCEEDED after 2 attempt(s)" in lines, lines
    assert lines.count("state SUCCEEDED") == 1, lines
    videos = sum(1 for _ in big_folder.iterdir())
    assert f"{videos} videos of at least 0.1 s under {big_folder}" in lines, lines
    assert lines[-1] == "as expected: NOT_FOUND", lines


async def test_client_mirror_example_keeps_a_copy_over_its_restarts(
    server: Any, tmp_path: Path
) -> None:
    """docs/client.md's LibraryMirror program follows a library into a file; killed, it misses
    the changes made meanwhile, and started again, it resumes after its last change (no
    RESYNC) and ends with exactly what ListVideos lists of the library."""
    _example, mirror = python_blocks(DOCS / "client.md")
    script = tmp_path / "mirror.py"
    script.write_text(mirror)
    root, saved = tmp_path / "films", tmp_path / "films.json"
    tiny_video(root / "a.mp4")
    async with ScanClient(server.address) as client:
        library = await client.create_library(
            "films", str(root), quiet_window=1e-9, watch_mode=scan_pb2.WATCH_MODE_OFF
        )

        async def scan() -> None:
            job = await client.wait((await client.submit_scan(str(root))).job_id, timeout=TIMEOUT)
            assert job.state == scan_pb2.JOB_STATE_SUCCEEDED, job

        await scan()
        async with _running(script, server.address, "films", str(saved)) as lines:
            assert await anext(lines) == "1 RESYNC films: 1 videos"
            tiny_video(root / "b.mp4", seconds=0.4)
            await scan()
            assert await anext(lines) == f"2 ADDED {real(root / 'b.mp4')}: 2 videos"
        os.rename(root / "a.mp4", root / "c.mp4")
        os.unlink(root / "b.mp4")
        await scan()
        async with _running(script, server.address, "films", str(saved)) as lines:
            later = sorted([await anext(lines), await anext(lines)])
        assert [line.split()[0] for line in later] == ["3", "4"]  # no RESYNC: a resume
        assert sorted(line.split()[1] for line in later) == ["MOVED", "REMOVED"]
        assert later[1].endswith(": 1 videos")
        listed = {v.video_id: v.path async for v in client.list_videos(library="films")}
    copy = json.loads(saved.read_text())
    assert (copy["sequence"], copy["uid"]) == (4, library.uid)
    assert {v["videoId"]: v["path"] for v in copy["videos"]} == listed
    assert list(listed.values()) == [real(root / "c.mp4")]


@contextlib.asynccontextmanager
async def _running(script: Path, *args: str) -> AsyncIterator[AsyncIterator[str]]:
    """The program running, its lines as they come; killed at the end (a crash)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )

    async def lines() -> AsyncIterator[str]:
        assert process.stdout is not None
        while True:
            async with asyncio.timeout(TIMEOUT):
                line = await process.stdout.readline()
            if not line:
                assert process.stderr is not None
                raise AssertionError((await process.stderr.read()).decode())
            yield line.decode().rstrip("\n")

    try:
        yield lines()
    finally:
        process.kill()
        await process.wait()


# -- the docs name what exists ---------------------------------------------------------------

ROOT = DOCS.parent
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
SOURCES = [
    path
    for folder in ("server", "client", "protos", "bench", "tests")
    for path in (ROOT / folder).rglob("*.py")
]
#: Flags of other programs that the docs show (apt-get, systemctl, pip, py-spy, protoc, fsfreeze,
#: pytest-xdist).
OTHER_TOOLS_FLAGS = {
    "--dist",
    "--no-install-recommends",
    "--now",
    "--upgrade",
    "--gil",
    "--native",
    "--include",
    "--unfreeze",
}


def backticked(page: Path) -> set[str]:
    return set(re.findall(r"`([^`\n]+)`", page.read_text()))


def test_architecture_names_only_modules_and_names_that_exist() -> None:
    names = backticked(DOCS / "architecture.md")
    files = {path.name for path in SOURCES} | {str(path.relative_to(ROOT)) for path in SOURCES}
    named_files = {n for n in names if re.fullmatch(r"[\w./]+\.py", n)}
    missing_files = {n for n in named_files if n.split("/")[-1] not in files and n not in files}
    assert named_files and not missing_files, missing_files

    code = "\n".join(p.read_text() for p in SOURCES if p.parts[len(ROOT.parts)] != "tests")
    private = {m.group(1) for n in names if (m := re.fullmatch(r"(_\w+)(\(\))?", n))}
    missing = {n for n in private if not re.search(rf"\b{re.escape(n)}\b", code)}
    assert private and not missing, missing


def _help_texts() -> str:
    commands = [
        ["mediascan-server", "--help"],
        ["mediascan-server", "copy-db", "--help"],
        ["mediascan", "--help"],
        *(
            ["mediascan", sub, "--help"]
            for sub in ("scan", "job", "watch", "cancel", "delete", "jobs", "videos", "duplicates")
        ),
        *(
            ["mediascan", "library", sub, "--help"]
            for sub in ("add", "list", "show", "update", "remove", "watch")
        ),
    ]
    bin_dir = Path(sys.executable).parent
    texts = [
        subprocess.run(
            [str(bin_dir / c[0]), *c[1:]], capture_output=True, text=True, check=True
        ).stdout
        for c in commands
    ]
    for module in ("bench", "bench.ab", "mediascan.server.demo"):
        texts.append(
            subprocess.run(
                [sys.executable, "-m", module, "--help"],
                capture_output=True,
                text=True,
                check=True,
                cwd=ROOT,
            ).stdout
        )
    return "\n".join(texts)


def test_every_flag_in_the_docs_exists() -> None:
    helps = set(re.findall(r"--[a-z][a-z0-9-]+", _help_texts()))
    documented = {
        flag
        for page in PAGES
        for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]+)", page.read_text())
    }
    unknown = documented - helps - OTHER_TOOLS_FLAGS
    assert not unknown, f"flags in the docs that no --help lists: {sorted(unknown)}"


def test_docs_speak_of_the_project_alone() -> None:
    for page in PAGES:
        text = page.read_text()
        history = re.findall(r"(?i)\bsessions? \d|\bDESIGN\.md\b|outside this repository", text)
        assert not history, (page.name, history)


def test_readme_links_every_doc() -> None:
    readme = (ROOT / "README.md").read_text()
    unlinked = [p.name for p in DOCS.glob("*.md") if f"(docs/{p.name})" not in readme]
    assert not unlinked, unlinked


# -- docs/api.md's transcripts are what the server prints ------------------------------------

#: What differs from one run of docs/examples.py to the next, and nothing else: job ids (each
#: becomes `<job N>` in order of first appearance, so the same job is still the same job), page
#: tokens that hold a job id (compared decoded), times, and the file a scan handled last (probes
#: finish in any order).
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\d[T ]\d\d:\d\d:\d\d[.,]\d+Z?")
JOB_ID = re.compile(r"\bj_[0-9A-Z]{26}\b")
TOKEN = re.compile(r"\bey[A-Za-z0-9_-]{8,}=*")
CURRENT_PATH = re.compile(r'("currentPath": )"[^"]*"')
#: The blocks of scans stopped part way (a cancel, a time limit, a shutdown): how many files they
#: handled varies, so these fields' lines are left out of the comparison there.
PARTIAL = {
    "cancel": ("filesFound", "filesDone", "filesTotal", "added", "bytesDone", "bytesTotal"),
    "timeout": ("filesTotal", "added", "updated", "bytesTotal"),
    "shutdown": (
        "phase",
        "filesFound",
        "filesDone",
        "filesTotal",
        "added",
        "bytesDone",
        "fraction",
    ),
    "shutdown-resume": ("added", "unchanged"),
}
#: The figures that the same counts give in the prose.
PARTIAL_VALUES = ("attempt-1", "attempt-2", "mp4-bytes", "mkv-bytes", "big-bytes")
#: Byte counts: the encoder that makes the sample videos gives a file a byte or two more or less
#: from one run to the next, and every size and byte total follows.
BYTES = re.compile(r'("(?:bytesDone|bytesTotal|sizeBytes|totalSizeBytes)": )"\d+"')
#: Content fingerprints follow those bytes.
FINGERPRINT = re.compile(r'("fingerprint": )"\d+-[0-9a-f]{32}"')
EXAMPLE_BLOCK = re.compile(r"(<!-- example: ([\w-]+) -->\n```[^\n]*\n)(.*?)(^```$)", re.S | re.M)
EXAMPLE_VALUE = re.compile(r"(<!-- value: ([\w-]+) -->)(.*?)(<!-- /value -->)", re.S)


def _decoded_token(match: re.Match[str]) -> str:
    try:
        text = base64.urlsafe_b64decode(match[0] + "=" * (-len(match[0]) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        return match[0]
    return f"<token {text}>" if JOB_ID.search(text) else match[0]


def masked_page(page: str) -> str:
    """The page with what varies from run to run masked (see TIMESTAMP to PARTIAL_VALUES)."""

    def block(match: re.Match[str]) -> str:
        text = match[3]
        if match[2] in PARTIAL:
            keys = "|".join(PARTIAL[match[2]])
            text = re.sub(rf'^\s*"(?:{keys})": .*\n', "", text, flags=re.M)
            text = re.sub(r",$", "", text, flags=re.M)
        return match[1] + text + match[4]

    def value(match: re.Match[str]) -> str:
        return match[1] + ("<n>" if match[2] in PARTIAL_VALUES else match[3]) + match[4]

    page = EXAMPLE_VALUE.sub(value, EXAMPLE_BLOCK.sub(block, page))
    page = TIMESTAMP.sub("<time>", TOKEN.sub(_decoded_token, page))
    page = BYTES.sub(r'\1"<n>"', page)
    page = FINGERPRINT.sub(r'\1"<fingerprint>"', page)
    page = CURRENT_PATH.sub(r"\1<path>", page)
    jobs: dict[str, str] = {}
    return JOB_ID.sub(lambda m: jobs.setdefault(m[0], f"<job {len(jobs) + 1}>"), page)


@pytest.mark.slow
@pytest.mark.xdist_group("heavy")
@pytest.mark.timeout(600)
def test_api_transcripts_are_what_the_server_prints_today(tmp_path: Path) -> None:
    """docs/examples.py run against a copy of api.md rewrites it to the committed page, apart
    from what varies from run to run: a change in the server's output fails here until
    `make docs-examples` is run again."""
    committed = DOCS / "api.md"
    page = tmp_path / "api.md"
    shutil.copyfile(committed, page)
    run = subprocess.run(
        [sys.executable, str(DOCS / "examples.py"), "--page", str(page)],
        capture_output=True,
        text=True,
        timeout=540,
        cwd=ROOT,
        check=False,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    expected, got = (masked_page(p.read_text()).splitlines() for p in (committed, page))
    diff = "\n".join(difflib.unified_diff(expected, got, "committed", "today", lineterm=""))
    assert expected == got, f"docs/api.md is stale: run `make docs-examples`\n{diff}"
    assert len(EXAMPLE_BLOCK.findall(page.read_text())) >= 20


def test_masking_keeps_counts_and_sequences() -> None:
    """The masks hide ids and times, never a sequence number or a count outside PARTIAL."""
    first, second = "j_01M8VXH62D0A9EDZ81VKY0FC55", "j_01M8VXKX3E6XB0V61DWZ74QE8P"
    one = f'"jobId": "{first}",\n"sequence": "8",\n"eventTime": "2026-12-02T17:41:26.640427893Z"'
    assert masked_page(one) == masked_page(one.replace(first, second).replace("17:41", "18:02"))
    assert masked_page(one) != masked_page(one.replace('"8"', '"9"'))
    assert masked_page(f'"added": 9, "{first}"') != masked_page(f'"added": 10, "{first}"')

    def token(job: str, after: int) -> str:
        return base64.urlsafe_b64encode(f'{{"j":"{job}","n":{after}}}'.encode()).decode()

    assert masked_page(token(first, 1)) == masked_page(token(second, 1))
    assert masked_page(token(first, 1)) != masked_page(token(first, 3))
