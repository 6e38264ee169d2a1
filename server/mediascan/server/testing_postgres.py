"""For tests and benchmarks: a throwaway PostgreSQL cluster. Debian's `postgresql` package,
`initdb` and `pg_ctl` on a fresh temporary folder and a free port (its Unix socket in that folder
too), so that two runs on one machine never meet. As root, the server runs as the `postgres`
user (`initdb` refuses root). `fresh()` gives a new empty database of the cluster.

Its settings (no fsync, no synchronous commit) make it fast and unsafe: never for real data."""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg

#: Where Debian's postgresql package puts its programs, newest version last after sorting.
BIN_GLOB = "/usr/lib/postgresql/*/bin"
INSTALL_HINT = (
    "a throwaway cluster needs PostgreSQL's server: apt-get install postgresql "
    "(make test and make bench do it as root)"
)
#: Settings of a cluster that only tests and benchmarks use: nothing has to survive a crash.
SERVER_SETTINGS = (
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=200",
)
START_TRIES = 3


def bin_dir() -> Path:
    found = sorted(glob.glob(BIN_GLOB), key=lambda p: int(Path(p).parent.name))
    for candidate in reversed(found):
        if (Path(candidate) / "initdb").exists():
            return Path(candidate)
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    raise RuntimeError(INSTALL_HINT)


class PostgresCluster:
    """A running cluster: `url(name)` of one of its databases, `fresh()` a new empty one;
    `stop()` and `start()` again on the same port (for the tests of an unreachable database;
    never on the session's cluster, which other tests share)."""

    def __init__(self, folder: Path, port: int, bin: Path | None = None) -> None:
        self.folder = folder
        self.port = port
        self.bin = bin
        self._names = itertools.count(1)

    def stop(self) -> None:
        """Stop the server (`fast`: every connection is cut; what was committed is kept, which
        `immediate` would not promise with this cluster's `synchronous_commit=off`)."""
        assert self.bin is not None
        _run(
            [str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m", "fast",
             "-w", "stop"],
            "pg_ctl stop",
        )  # fmt: skip

    def start(self) -> None:
        """Start it again on its port."""
        assert self.bin is not None
        _run(_start_command(self.bin, self.folder / "data", self.folder, self.port), "pg_ctl start")

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def fresh(self) -> str:
        """The URL of a new empty database (a copy of template0)."""
        name = f"t{os.getpid()}_{next(self._names)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0 STRATEGY FILE_COPY')
        return self.url(name)


def _as_postgres(command: list[str]) -> list[str]:
    """`command` run as the postgres user when we are root (initdb refuses root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *command]
    return command


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(_as_postgres(command), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({done.returncode}):\n{done.stdout}{done.stderr}")


def _start(bin: Path, data: Path, folder: Path) -> int:
    """Start the server on a free port (another one if that port was taken meanwhile)."""
    for attempt in range(START_TRIES):
        port = _free_port()
        try:
            _run(_start_command(bin, data, folder, port), "pg_ctl start")
        except RuntimeError:
            if attempt == START_TRIES - 1:
                log = (folder / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"PostgreSQL did not start; its log ends:\n{log}") from None
            continue
        return port
    raise AssertionError("unreachable")


def _start_command(bin: Path, data: Path, folder: Path, port: int) -> list[str]:
    options = " ".join(
        ["-c listen_addresses=127.0.0.1", f"-k {folder}"] + [f"-c {s}" for s in SERVER_SETTINGS]
    )
    return [
        str(bin / "pg_ctl"),
        "-D",
        str(data),
        "-l",
        str(folder / "server.log"),
        "-o",
        f"-p {port} {options}",
        "-w",
        "-t",
        "60",
        "start",
    ]


@contextlib.contextmanager
def postgres_cluster() -> Iterator[PostgresCluster]:
    """A cluster of its own, stopped and removed on exit."""
    bin = bin_dir()
    folder = Path(tempfile.mkdtemp(prefix="mediascan-pg-"))
    folder.chmod(0o755)  # the postgres user enters it
    data = folder / "data"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    started = False
    try:
        _run(
            [
                str(bin / "initdb"),
                "-D",
                str(data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            "initdb",
        )
        port = _start(bin, data, folder)
        started = True
        yield PostgresCluster(folder, port, bin)
    finally:
        if started:
            with contextlib.suppress(RuntimeError):
                _run(
                    [str(bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                    "pg_ctl stop",
                )
        shutil.rmtree(folder, ignore_errors=True)
