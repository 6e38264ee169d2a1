"""The deployment files of deploy/ (docs/operations.md, "Several nodes") say what the server
understands: the Compose file parses, runs PostgreSQL and three nodes with distinct names and
ports, and every MEDIASCAN_* variable there and in the systemd files is the twin of a flag that
`mediascan-server --help` lists. No password is written in any of them: the database URL has
none, and libpq reads it from PGPASSFILE.

Neither Docker nor systemd runs here: what they would do with the files is not tested."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
VARIABLE = re.compile(r"\bMEDIASCAN_[A-Z_]+\b")


@pytest.fixture(scope="module")
def known_variables() -> set[str]:
    server = Path(sys.executable).parent / "mediascan-server"
    text = subprocess.run([str(server), "--help"], capture_output=True, text=True, check=True)
    return set(VARIABLE.findall(text.stdout))


def _env_file(path: Path) -> dict[str, str]:
    pairs = (
        line.split("=", 1)
        for line in path.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    )
    return {key: value for key, value in pairs}


def _no_password(url: str) -> None:
    parts = urlsplit(url)
    assert parts.scheme == "postgresql" and parts.username, url
    assert parts.password is None, f"a password in {url}"


def test_compose_runs_postgresql_and_three_nodes(known_variables: set[str]) -> None:
    compose: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    services = compose["services"]
    nodes = {name: spec for name, spec in services.items() if name != "db"}
    assert "db" in services and len(nodes) == 3
    names, ports = set(), set()
    for name, spec in nodes.items():
        env = spec["environment"]
        assert set(VARIABLE.findall(" ".join(env))) <= known_variables, name
        _no_password(env["MEDIASCAN_DB"])
        assert urlsplit(env["MEDIASCAN_DB"]).hostname == "db"
        assert env["PGPASSFILE"].startswith("/run/secrets/") and "pgpass" in spec["secrets"]
        assert spec["depends_on"]["db"]["condition"] == "service_healthy"
        names.add(env["MEDIASCAN_NODE_NAME"])
        ports.update(spec["ports"])
    assert len(names) == 3 and len(ports) == 3
    for secret in compose["secrets"].values():
        assert secret["file"].startswith("./secrets/")  # written by hand, ignored by git
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), line


def test_systemd_unit_takes_its_settings_from_the_environment(known_variables: set[str]) -> None:
    unit = (DEPLOY / "systemd" / "mediascan@.service").read_text()
    settings = dict(
        line.split("=", 1) for line in unit.splitlines() if "=" in line and line[0].isupper()
    )
    assert settings["ExecStart"].split() == ["/opt/mediascan/.venv/bin/mediascan-server"]
    assert settings["EnvironmentFile"] == "/etc/mediascan/%i.env"
    assert "PGPASSFILE=" in unit
    assert set(VARIABLE.findall(unit)) <= known_variables
    example = _env_file(DEPLOY / "systemd" / "node.env.example")
    assert set(example) <= known_variables
    _no_password(example["MEDIASCAN_DB"])
