"""The docs' runnable examples run: the `ScanClient` example of docs/client.md, through a server
restart, against a real server process."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
TIMEOUT = 90.0


def python_blocks(page: Path) -> list[str]:
    """The ```python blocks of a Markdown page, in order."""
    return re.findall(r"^```python\n(.*?)^```$", page.read_text(), flags=re.S | re.M)


@pytest.mark.slow
async def test_client_example_follows_a_scan_through_a_restart(
    spawn_server: Any, big_folder: Path, tmp_path: Path
) -> None:
    (example,) = python_blocks(DOCS / "client.md")
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


# -- the docs name what exists ---------------------------------------------------------------

ROOT = DOCS.parent
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
SOURCES = [
    path
    for folder in ("server", "client", "protos", "bench", "tests")
    for path in (ROOT / folder).rglob("*.py")
]
#: Flags of other programs that the docs show (apt-get, systemctl, pip, py-spy, protoc, fsfreeze).
OTHER_TOOLS_FLAGS = {
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
        ["mediascan", "--help"],
        *(
            ["mediascan", sub, "--help"]
            for sub in ("scan", "job", "watch", "cancel", "delete", "jobs", "videos")
        ),
    ]
    bin_dir = Path(sys.executable).parent
    texts = [
        subprocess.run(
            [str(bin_dir / c[0]), *c[1:]], capture_output=True, text=True, check=True
        ).stdout
        for c in commands
    ]
    for module in ("bench", "mediascan.server.demo"):
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
