"""The layers show in the imports: the engine, the store and the domain modules import nothing
from gRPC (they raise domain errors; `status.py` and `service.py` map them to statuses)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

SERVER = Path(__file__).resolve().parent.parent / "server" / "mediascan" / "server"
FORBIDDEN = ("grpc", "grpc_status", "grpc_health", "grpc_reflection")

#: The scanner and the path policy: they report per-file errors with domain codes.
SCANNER = (
    "scanner.py",
    "walker.py",
    "walk_errors.py",
    "open_files.py",
    "escaping.py",
    "mounts.py",
    "roots.py",
    "probe_pool.py",
    "probe.py",
    "videonames.py",
)
#: Every module of the engine and the store, and the domain modules they stand on.
CHECKED = sorted(
    [
        *(SERVER / "engine").rglob("*.py"),
        *(SERVER / "store").rglob("*.py"),
        *(SERVER / name for name in ("errors.py", "jobs.py", "events.py", "streams.py")),
        SERVER / "follow.py",
        *(SERVER / name for name in ("dblock.py", "lane.py", "logs.py", "supervisor.py")),
        *(SERVER / name for name in SCANNER),
    ]
)


def top_level_imports(path: Path) -> set[str]:
    """The absolute modules `path` imports, anywhere in it (also under TYPE_CHECKING)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def is_grpc(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def test_the_checked_modules_are_the_engine_and_the_store() -> None:
    names = {str(p.relative_to(SERVER)) for p in CHECKED}
    assert {"engine/engine.py", "engine/worker.py", "store/protocol.py"} <= names
    assert {"store/sqlite/store.py", "store/sqlite/writer.py"} <= names
    assert {"store/postgres/store.py", "store/postgres/jobs.py", "store/factory.py"} <= names
    assert {"scanner.py", "walker.py", "roots.py", "probe_pool.py"} <= names


@pytest.mark.parametrize("path", CHECKED, ids=lambda p: str(p.relative_to(SERVER)))
def test_no_grpc_import(path: Path) -> None:
    grpc_imports = sorted(m for m in top_level_imports(path) if is_grpc(m))
    assert not grpc_imports, f"{path.name} imports {grpc_imports}: raise a domain error instead"


def test_the_check_sees_a_grpc_import(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("from grpc_status import rpc_status\nif True:\n    import grpc.aio\n")
    assert {"grpc_status", "grpc.aio"} <= {m for m in top_level_imports(module) if is_grpc(m)}


def test_the_store_loads_without_grpc() -> None:
    """At run time too: importing the store and the domain modules loads no gRPC module."""
    code = (
        "import sys\n"
        "import mediascan.server.store, mediascan.server.events, mediascan.server.errors\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{FORBIDDEN!r}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == "[]", out.stdout
