"""Server configuration: durations, flags and their MEDIASCAN_* environment twins."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from mediascan.server.config import Config, load_config, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("2d", 172800.0),
        ("250ms", 0.25),
        ("1.5s", 1.5),
        ("45", 45.0),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "5 minutes", "-5s", "1h30m", "abc"])
def test_parse_duration_rejects_garbage(text: str) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_defaults() -> None:
    config = load_config([], env={})
    assert config == Config()
    assert config.listen == "127.0.0.1:50051"
    assert config.db == Path("var/mediascan.db")
    assert config.workers == 2
    assert config.max_queued == 1000
    assert config.default_timeout == 300.0
    assert config.shutdown_grace == 10.0
    assert config.allow_roots == ()
    assert config.progress_fanout == 500


def test_flags() -> None:
    config = load_config(
        [
            "--listen",
            "0.0.0.0:6000",
            "--db",
            "/tmp/x.db",
            "--workers",
            "3",
            "--max-queued",
            "7",
            "--default-timeout",
            "5m",
            "--max-timeout",
            "1h",
            "--shutdown-grace",
            "30s",
            "--allow-root",
            "/srv/a",
            "--allow-root",
            "/srv/b",
            "--log-level",
            "DEBUG",
        ],
        env={},
    )
    assert config.listen == "0.0.0.0:6000"
    assert config.db == Path("/tmp/x.db")
    assert config.workers == 3
    assert config.max_queued == 7
    assert config.default_timeout == 300.0
    assert config.max_timeout == 3600.0
    assert config.shutdown_grace == 30.0
    assert config.allow_roots == (Path("/srv/a"), Path("/srv/b"))
    assert config.log_level == "DEBUG"


def test_environment_twins() -> None:
    env = {
        "MEDIASCAN_LISTEN": "127.0.0.1:7000",
        "MEDIASCAN_DB": "/tmp/env.db",
        "MEDIASCAN_WORKERS": "4",
        "MEDIASCAN_MAX_QUEUED": "9",
        "MEDIASCAN_DEFAULT_TIMEOUT": "30s",
        "MEDIASCAN_MAX_TIMEOUT": "1h",
        "MEDIASCAN_SHUTDOWN_GRACE": "5m",
        "MEDIASCAN_ALLOW_ROOTS": "/srv/a:/srv/b",
    }
    config = load_config([], env=env)
    assert config.listen == "127.0.0.1:7000"
    assert config.db == Path("/tmp/env.db")
    assert config.workers == 4
    assert config.max_queued == 9
    assert config.default_timeout == 30.0
    assert config.max_timeout == 3600.0
    assert config.shutdown_grace == 300.0
    assert config.allow_roots == (Path("/srv/a"), Path("/srv/b"))


def test_flag_wins_over_environment() -> None:
    config = load_config(["--workers", "5"], env={"MEDIASCAN_WORKERS": "4"})
    assert config.workers == 5


@pytest.mark.parametrize(
    ("argv", "env", "needle"),
    [
        (["--workers", "0"], {}, "--workers"),
        (["--default-timeout", "soon"], {}, "--default-timeout"),
        ([], {"MEDIASCAN_SHUTDOWN_GRACE": "forever"}, "MEDIASCAN_SHUTDOWN_GRACE"),
        (["--max-queued", "x"], {}, "--max-queued"),
        (["--progress-fanout", "0"], {}, "--progress-fanout"),
        ([], {"MEDIASCAN_PROGRESS_FANOUT": "many"}, "MEDIASCAN_PROGRESS_FANOUT"),
    ],
)
def test_invalid_values_name_the_flag(
    argv: list[str], env: dict[str, str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        load_config(argv, env=env)
    assert exit_info.value.code == 2
    assert needle in capsys.readouterr().err


def test_db_is_a_file_or_a_postgresql_url() -> None:
    for url in ("postgresql://scan@db.example:5432/mediascan", "postgres://db/mediascan"):
        for config in (
            load_config(["--db", url], env={}),
            load_config([], env={"MEDIASCAN_DB": url}),
        ):
            assert config.db == url and config.postgres
    config = load_config(["--db", "var/x.db"], env={})
    assert config.db == Path("var/x.db") and not config.postgres
    assert Config(db="relative.db").db == Path("relative.db")  # a str that is no URL: a file


def test_node_name_defaults_to_host_and_port_of_listen() -> None:
    config = load_config(["--listen", "0.0.0.0:6001"], env={})
    assert config.effective_node_name == f"{socket.gethostname()}:6001"
    named = load_config([], env={"MEDIASCAN_NODE_NAME": "scanner-b"})
    assert named.effective_node_name == "scanner-b"
    assert load_config(["--node-name", "a"], env={"MEDIASCAN_NODE_NAME": "b"}).node_name == "a"


def test_workers_0_makes_an_api_only_server_on_postgresql_only(
    capsys: pytest.CaptureFixture[str],
) -> None:
    config = load_config(["--workers", "0", "--db", "postgresql://scan@db/mediascan"], env={})
    assert config.workers == 0
    with pytest.raises(SystemExit):
        load_config(["--workers", "0", "--db", "/tmp/x.db"], env={})
    assert "needs a database shared" in capsys.readouterr().err
    assert load_config(["--claim-recheck", "1h"], env={}).claim_recheck == 3600.0


def test_the_lease_is_a_positive_duration_with_an_environment_twin(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert load_config([], env={}).lease == 15.0
    assert load_config(["--lease", "2s"], env={}).lease == 2.0
    assert load_config([], env={"MEDIASCAN_LEASE": "1m"}).lease == 60.0
    with pytest.raises(SystemExit):
        load_config(["--lease", "0s"], env={})
    assert "--lease must be positive" in capsys.readouterr().err


def test_max_attempts_is_at_least_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_config([], env={}).max_attempts == 3
    assert load_config(["--max-attempts", "5"], env={}).max_attempts == 5
    assert load_config([], env={"MEDIASCAN_MAX_ATTEMPTS": "1"}).max_attempts == 1
    with pytest.raises(SystemExit):
        load_config(["--max-attempts", "0"], env={})
    assert "--max-attempts must be at least 1" in capsys.readouterr().err
