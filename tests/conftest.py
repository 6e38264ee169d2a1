"""Shared fixtures: a generated video corpus, in-process servers on port 0, stubs on real channels,
subprocess servers for restart and signal tests, and the grpcurl binary.

`make test` runs the tests in pytest-xdist workers (`--dist loadgroup`): each worker has its own
session fixtures (corpus, folders, PostgreSQL cluster) under its own temporary folder. The long,
CPU-heavy tests are marked `xdist_group("heavy")`: one worker runs them one after the other,
first, while the others take the rest."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from mediascan.server.app import MediascanServer
from mediascan.server.config import Config
from mediascan.server.testing import SLOW_PROBE, Corpus, make_corpus, make_many
from mediascan.v1 import scan_pb2_grpc

#: A test past its timeout fails with a few lines naming what it awaited (tests/_timeouts.py).
pytest_plugins = ["_timeouts", "_postgres"]

BIN = Path(sys.executable).parent
LISTEN_LINE = re.compile(r"^mediascan-server listening on (?P<host>\S+):(?P<port>\d+)$")
READY_TIMEOUT = 15.0
#: Bound on a server's graceful stop at teardown (its shutdown grace plus some).
STOP_TIMEOUT = 30.0

#: Files in the session's "big" folder: a scan of it takes several seconds.
BIG_FILES = 3000

#: Threads that may outlive the tests: library daemons, by name (a regex on the whole name).
#: Everything else still running at the end of the session (a server's `path-lane`, `walk_*`
#: or `sqlite-*` thread, a forgotten spawn_server drain, ...) is a leak and fails the session.
#: gRPC aio polls its completion queue in `_poll_wrapper` while the library is initialized.
ALLOWED_THREADS = re.compile(r"Thread-\d+ \(_poll_wrapper\)")
#: How long the session's end waits for threads that are already ending (seconds).
THREAD_END_TIMEOUT = 10.0


@pytest.fixture(scope="session", autouse=True)
def no_stray_threads() -> Iterator[None]:
    """After the last test: only the main thread and ALLOWED_THREADS are left."""
    yield
    deadline = time.monotonic() + THREAD_END_TIMEOUT
    stray = _stray_threads()
    for thread in stray:  # those already on their way out get a moment to finish
        thread.join(max(0.0, deadline - time.monotonic()))
    stray = _stray_threads()
    assert not stray, "threads left running after the tests: " + ", ".join(
        f"{t.name} (daemon={t.daemon})" for t in stray
    )


def _stray_threads() -> list[threading.Thread]:
    main = threading.main_thread()
    return [
        t
        for t in threading.enumerate()
        if t is not main and t.is_alive() and not ALLOWED_THREADS.fullmatch(t.name)
    ]


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    """Valid, broken and non-video files in nested folders, generated once per session."""
    return make_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="session")
def big_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of BIG_FILES tiny videos: a job that runs long enough to be cancelled, to time
    out, to hold a worker or to be interrupted. Treat it as read-only."""
    root = tmp_path_factory.mktemp("big")
    make_many(root, BIG_FILES, **SLOW_PROBE)
    return root


@pytest.fixture(scope="session")
def medium_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of 600 tiny videos: a scan of about a second, with several progress events."""
    root = tmp_path_factory.mktemp("medium")
    make_many(root, 600, **SLOW_PROBE)
    return root


@pytest.fixture(scope="session")
def small_folders(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Eight distinct folders of three tiny videos each (distinct paths: never deduplicated)."""
    base = tmp_path_factory.mktemp("small")
    folders = []
    for index in range(8):
        folder = base / f"s{index}"
        make_many(folder, 3)
        folders.append(folder)
    return folders


ServerFactory = Callable[..., Awaitable[Any]]

#: The backends of `make_server`; a test module marked `both_backends` runs on each.
BACKENDS = ("sqlite", "postgres")
_BACKEND_MARKS = {"postgres": (pytest.mark.slow,)}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """Tests marked `both_backends` (usually a whole module, through `pytestmark`) that use
    `make_server` run once per backend, with ids `[sqlite]` and `[postgres]`. The PostgreSQL
    runs are marked slow: `make check` (not slow) runs the contract on SQLite and the
    PostgreSQL store's own tests; `make test` runs everything on both."""
    if "backend" in metafunc.fixturenames and metafunc.definition.get_closest_marker(
        "both_backends"
    ):
        params = [pytest.param(name, marks=_BACKEND_MARKS.get(name, ())) for name in BACKENDS]
        metafunc.parametrize("backend", params, indirect=True)
    if "walk" in metafunc.fixturenames and metafunc.definition.get_closest_marker("both_walks"):
        metafunc.parametrize("walk", WALKS, indirect=True)


#: The walks of a rescan: the Python walk, and `find` first (`find_walk.py`, from one video in
#: the library on); a test module marked `both_walks` runs on each.
WALKS = ("python", "find")


@pytest.fixture
def walk(request: pytest.FixtureRequest) -> str:
    """The walk `make_server` gives its servers: "default" (the server's) unless parametrized."""
    return str(getattr(request, "param", "default"))


@pytest.fixture
def backend(request: pytest.FixtureRequest) -> str:
    """The database `make_server` gives its servers: "sqlite" unless parametrized."""
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def database(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Path | str:
    """The test's database: tmp_path/"mediascan.db", or a fresh PostgreSQL database's URL."""
    if backend == "postgres":
        cluster = request.getfixturevalue("postgres")
        return str(cluster.fresh())
    return tmp_path / "mediascan.db"


@pytest.fixture
async def make_server(database: Path | str, walk: str) -> AsyncIterator[ServerFactory]:
    """`await make_server(**overrides)` starts an in-process MediascanServer on 127.0.0.1:0 with
    the test's `database` and `walk` (all overridable); all are stopped at teardown."""
    servers: list[MediascanServer] = []

    async def factory(**overrides: Any) -> MediascanServer:
        values: dict[str, Any] = {"listen": "127.0.0.1:0", "db": database}
        if walk != "default":
            values["find_walk_min"] = 1 if walk == "find" else 0
        values.update(overrides)
        server = MediascanServer(Config(**values))
        servers.append(server)
        async with asyncio.timeout(READY_TIMEOUT):
            await server.start()
        return server

    yield factory
    for server in reversed(servers):
        async with asyncio.timeout(STOP_TIMEOUT + server.config.shutdown_grace):
            await server.stop()


@pytest.fixture
async def server(make_server: ServerFactory) -> Any:
    return await make_server()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[[str], Awaitable[scan_pb2_grpc.ScanServiceStub]]]:
    """`await connect(address)` opens a channel, waits until it is READY and returns a stub;
    the channels are closed at teardown."""
    channels: list[grpc.aio.Channel] = []

    async def factory(address: str) -> scan_pb2_grpc.ScanServiceStub:
        channel = grpc.aio.insecure_channel(address)
        channels.append(channel)
        async with asyncio.timeout(READY_TIMEOUT):
            await channel.channel_ready()
        return scan_pb2_grpc.ScanServiceStub(channel)

    yield factory
    for channel in channels:
        async with asyncio.timeout(STOP_TIMEOUT):
            await channel.close()


@pytest.fixture
async def stub(server: Any, connect: Any) -> scan_pb2_grpc.ScanServiceStub:
    """A ScanService stub on a READY channel to the `server` fixture."""
    stub: scan_pb2_grpc.ScanServiceStub = await connect(server.address)
    return stub


@dataclasses.dataclass
class SpawnedServer:
    """A `mediascan-server` subprocess. `address` comes from its first stdout line."""

    process: subprocess.Popen[str]
    address: str
    db: Path
    stderr_path: Path
    stdout_rest: list[str] = dataclasses.field(default_factory=list)
    drain_thread: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def terminate(self) -> None:
        """Send SIGTERM (graceful drain)."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL (a crash: no chance to clean up)."""
        if self.process.poll() is None:
            self.process.kill()

    async def wait(self, timeout: float) -> int:
        """Wait (off the event loop) until the process exits; its exit code.
        Raises subprocess.TimeoutExpired after `timeout` seconds."""
        return await asyncio.to_thread(self.process.wait, timeout)

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")


@pytest.fixture
async def spawn_server(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[SpawnedServer]]]:
    """`await spawn_server(*extra_args, db=PATH)` runs `mediascan-server --listen 127.0.0.1:0
    --db PATH *extra_args`, reads its first stdout line `mediascan-server listening on HOST:PORT`
    and returns a SpawnedServer. Processes still alive at teardown are killed."""
    spawned: list[SpawnedServer] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASCAN_")}

    async def factory(*extra_args: str, db: Path | None = None) -> SpawnedServer:
        db = db or tmp_path / "mediascan.db"
        stderr_path = tmp_path / f"server-{len(spawned)}.stderr"
        with stderr_path.open("w") as stderr:
            process = subprocess.Popen(
                [
                    str(BIN / "mediascan-server"),
                    "--listen",
                    "127.0.0.1:0",
                    "--db",
                    str(db),
                    *extra_args,
                ],
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.DEVNULL,
                text=True,
                env=env,
            )
        assert process.stdout is not None
        handle = SpawnedServer(process=process, address="", db=db, stderr_path=stderr_path)
        spawned.append(handle)
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                line = await asyncio.to_thread(process.stdout.readline)
        except TimeoutError:
            handle.kill()
            raise AssertionError(
                "mediascan-server printed no listening line in time; stderr:\n"
                + handle.stderr_text()
            ) from None
        match = LISTEN_LINE.match(line.rstrip("\n"))
        assert match, f"unexpected first line {line!r}; stderr:\n{handle.stderr_text()}"
        handle.address = f"{match['host']}:{match['port']}"
        # Keep reading stdout so the server never blocks on a full pipe.
        handle.drain_thread = threading.Thread(
            target=_drain, args=(process.stdout, handle.stdout_rest), daemon=True
        )
        handle.drain_thread.start()
        return handle

    yield factory
    for handle in spawned:
        handle.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            await handle.wait(10)
        if handle.drain_thread is not None:
            await asyncio.to_thread(handle.drain_thread.join, 10)
        if handle.process.stdout is not None:
            handle.process.stdout.close()


def _drain(stream: Any, sink: list[str]) -> None:
    with contextlib.suppress(ValueError, OSError):
        for line in stream:
            sink.append(line)
    with contextlib.suppress(OSError):
        stream.close()


def unused_addresses(count: int) -> list[str]:
    """`count` different addresses nothing listens on (ports the system gave out and took back)."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket())
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    return [f"127.0.0.1:{port}" for port in ports]


@pytest.fixture
def free_address() -> str:
    """An address nothing listens on."""
    return unused_addresses(1)[0]


@pytest.fixture
def free_addresses() -> Callable[[int], list[str]]:
    """`free_addresses(n)`: n different addresses nothing listens on."""
    return unused_addresses


@pytest.fixture(scope="session")
def grpcurl() -> Path:
    """The grpcurl binary (a Python wrapper that execs grpcurl 1.8.6)."""
    path = BIN / "grpcurl"
    assert path.exists(), f"{path} is missing: install the dev extras"
    return path
