"""TLS, mutual TLS, bearer tokens, the refusal to listen unprotected on a non-loopback address, and
the connection limits: real certificates made here, real sockets, the real grpcurl and CLI."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import ipaddress
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mediascan.client import ScanClient
from mediascan.client.errors import MediascanError
from mediascan.server.config import Config, load_config
from mediascan.server.security import (
    SecurityError,
    bearer_token,
    check_exposure,
    is_loopback,
    read_tokens,
    token_matches,
)
from mediascan.v1 import scan_pb2, scan_pb2_grpc

BIN = Path(sys.executable).parent
TOKEN = "s3cr3t-" + "a" * 32
OTHER_TOKEN = "0ther-" + "b" * 32
TIMEOUT = 30.0


# -- a small PKI, made once per session ----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Pki:
    ca: Path  # the CA that signs the server and the good client
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # a client certificate signed by another CA
    rogue_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _certificate(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    elif server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        ).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _write(folder: Path, name: str, cert: x509.Certificate, key: Any) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key, rogue_ca_key = _key(), _key()
    ca = _certificate("mediascan test CA", ca_key, None, ca=True)
    rogue_ca = _certificate("someone else's CA", rogue_ca_key, None, ca=True)
    ca_path, _ = _write(folder, "ca", ca, ca_key)
    server_key, client_key, rogue_key = _key(), _key(), _key()
    signer = (ca.subject, ca_key)
    server = _write(
        folder, "server", _certificate("localhost", server_key, signer, server=True), server_key
    )
    client = _write(folder, "client", _certificate("a client", client_key, signer), client_key)
    rogue = _write(
        folder,
        "rogue",
        _certificate("a stranger", rogue_key, (rogue_ca.subject, rogue_ca_key)),
        rogue_key,
    )
    return Pki(ca_path, *server, *client, *rogue)


@pytest.fixture
def token_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(f"# tokens of mediascan\n\n{OTHER_TOKEN}\n{TOKEN}\n")
    path.chmod(0o600)
    return path


# -- channels ------------------------------------------------------------------------------------


Connect = Callable[..., Awaitable[grpc.aio.Channel]]


@pytest.fixture
async def channel_to() -> AsyncIterator[Connect]:
    """`await channel_to(address, pki=..., client=(cert, key)|None, plaintext=False)` opens a
    channel (TLS trusting the test CA unless plaintext); closed at teardown. Not waited on:
    callers decide whether it should connect."""
    channels: list[grpc.aio.Channel] = []

    async def factory(
        address: str,
        *,
        pki: Pki | None = None,
        client: tuple[Path, Path] | None = None,
        plaintext: bool = False,
    ) -> grpc.aio.Channel:
        options = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own
        if plaintext:
            channel = grpc.aio.insecure_channel(address, options=options)
        else:
            assert pki is not None
            credentials = grpc.ssl_channel_credentials(
                root_certificates=pki.ca.read_bytes(),
                private_key=client[1].read_bytes() if client else None,
                certificate_chain=client[0].read_bytes() if client else None,
            )
            channel = grpc.aio.secure_channel(address, credentials, options=options)
        channels.append(channel)
        return channel

    yield factory
    for channel in channels:
        await channel.close()


def _auth(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


async def _health(channel: grpc.aio.Channel) -> int:
    stub = health_pb2_grpc.HealthStub(channel)
    response = await stub.Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
    return int(response.status)


async def _reflection_services(
    channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = ()
) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")]),
        metadata=metadata,
        timeout=TIMEOUT,
    )
    names = []
    async for response in call:
        names.extend(s.name for s in response.list_services_response.service)
    return names


# -- TLS -------------------------------------------------------------------------------------------


async def test_tls_and_token_client_scans_and_watches(
    make_server: Any, pki: Pki, token_file: Path, small_folders: list[Path]
) -> None:
    server = await make_server(
        tls_cert=pki.server_cert, tls_key=pki.server_key, auth_token_file=token_file
    )
    async with ScanClient(server.address, tls_ca=pki.ca, token=TOKEN) as client:
        submitted = await client.submit_scan(str(small_folders[0]))
        # wait() follows the WatchJob stream: the token goes with streams too.
        job = await asyncio.wait_for(client.wait(submitted.job_id), TIMEOUT)
        assert job.state == scan_pb2.JOB_STATE_SUCCEEDED
        assert job.result.added == 3
        listed = [j.job_id async for j in client.list_jobs()]
        assert listed == [submitted.job_id]


async def test_plaintext_client_cannot_talk_to_a_tls_server(
    make_server: Any, pki: Pki, channel_to: Connect
) -> None:
    server = await make_server(tls_cert=pki.server_cert, tls_key=pki.server_key)
    assert await _health(await channel_to(server.address, pki=pki)) == 1  # SERVING over TLS
    plain = await channel_to(server.address, plaintext=True)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await health_pb2_grpc.HealthStub(plain).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert raised.value.code() in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    )


async def test_client_that_does_not_trust_the_server_certificate_is_refused(
    make_server: Any, pki: Pki
) -> None:
    server = await make_server(tls_cert=pki.server_cert, tls_key=pki.server_key)
    # The rogue client certificate is no CA of this server's certificate.
    async with ScanClient(server.address, tls_ca=pki.rogue_cert) as client:
        with pytest.raises(MediascanError) as raised:
            await asyncio.wait_for(client.get_job("j_none"), TIMEOUT)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE


async def test_cli_names_each_tls_mismatch_and_its_fix(make_server: Any, pki: Pki) -> None:
    """A failed connection is diagnosed (client/mediascan/client/diagnose.py): each mismatch gets
    one line naming it and the fix, not "cannot reach the server", and no gRPC core log lines."""
    tls = await make_server(tls_cert=pki.server_cert, tls_key=pki.server_key)
    mtls = await make_server(
        tls_cert=pki.server_cert,
        tls_key=pki.server_key,
        tls_client_ca=pki.ca,
        db=tls.config.db.with_name("mtls.db"),
    )
    plain = await make_server(db=tls.config.db.with_name("plain.db"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIASCAN_", "GRPC_"))}
    ca = ("--tls-ca", pki.ca)
    cases = {
        "the server uses TLS and this client does not": (tls.address,),
        "not trusted by the CA in --tls-ca": (tls.address, "--tls-ca", pki.rogue_cert),
        "does not cover 'wrong.example'": (tls.address, *ca, "--tls-server-name", "wrong.example"),
        "the server does not use TLS": (plain.address, *ca),
        "requires a client certificate": (mtls.address, *ca),
        "refused the client certificate": (
            mtls.address,
            *ca,
            "--tls-cert",
            pki.rogue_cert,
            "--tls-key",
            pki.rogue_key,
        ),
        "nothing accepts connections": (f"127.0.0.1:{_free_port()}",),
    }
    for expected, (address, *options) in cases.items():
        done = await _run(BIN / "mediascan", "--server", address, *options, "jobs", env=env)
        assert done.returncode == 2, (expected, done.stdout)
        assert done.stderr.count("\n") == 1, (expected, done.stderr)  # one line, said once
        assert expected in done.stderr, done.stderr
    good = await _run(
        BIN / "mediascan",
        "--server",
        mtls.address,
        *ca,
        "--tls-cert",
        pki.client_cert,
        "--tls-key",
        pki.client_key,
        "jobs",
        env=env,
    )
    assert good.returncode == 0, good.stderr


async def test_tls_and_token_apply_to_every_address(
    make_server: Any, pki: Pki, token_file: Path
) -> None:
    options = {"tls_cert": pki.server_cert, "tls_key": pki.server_key}
    first = await make_server(**options, auth_token_file=token_file)
    second = await make_server(
        **options, auth_token_file=token_file, db=first.config.db.with_name("second.db")
    )
    async with ScanClient([first.address, second.address], tls_ca=pki.ca, token=TOKEN) as client:
        assert [job async for job in client.list_jobs()] == []
        assert client.target == first.address
        await first.stop()
        assert [job async for job in client.list_jobs()] == []
        assert client.target == second.address


async def test_cli_diagnoses_each_address(make_server: Any, pki: Pki) -> None:
    """With several addresses, each that failed gets its own line and its own diagnosis."""
    tls = await make_server(tls_cert=pki.server_cert, tls_key=pki.server_key)
    dead = f"127.0.0.1:{_free_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIASCAN_", "GRPC_"))}

    done = await _run(BIN / "mediascan", "--server", f"{dead},{tls.address}", "jobs", env=env)

    assert done.returncode == 2, done.stdout
    down, mismatch = done.stderr.splitlines()
    assert down.startswith(f"error: cannot connect to {dead}: nothing accepts connections")
    assert mismatch.startswith(
        f"error: cannot connect to {tls.address}: the server uses TLS and this client does not"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# -- mutual TLS -----------------------------------------------------------------------------------


async def test_mtls_accepts_only_clients_with_a_certificate_from_the_ca(
    make_server: Any, pki: Pki, channel_to: Connect
) -> None:
    server = await make_server(
        tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca
    )
    good = await channel_to(server.address, pki=pki, client=(pki.client_cert, pki.client_key))
    assert await _health(good) == 1
    stub = scan_pb2_grpc.ScanServiceStub(good)
    listed = await stub.ListJobs(scan_pb2.ListJobsRequest(), timeout=TIMEOUT)
    assert list(listed.jobs) == []

    for client in (None, (pki.rogue_cert, pki.rogue_key)):  # no certificate; another CA's
        channel = await channel_to(server.address, pki=pki, client=client)
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=5
            )
        assert raised.value.code() in (
            grpc.StatusCode.UNAVAILABLE,
            grpc.StatusCode.DEADLINE_EXCEEDED,
        ), client

    # The ScanClient takes the same certificate.
    async with ScanClient(
        server.address, tls_ca=pki.ca, tls_cert=pki.client_cert, tls_key=pki.client_key
    ) as scan_client:
        assert [j async for j in scan_client.list_jobs()] == []


# -- tokens ----------------------------------------------------------------------------------------


async def test_missing_or_wrong_token_is_unauthenticated_and_health_stays_open(
    make_server: Any, token_file: Path, channel_to: Connect
) -> None:
    server = await make_server(auth_token_file=token_file)
    channel = await channel_to(server.address, plaintext=True)
    stub = scan_pb2_grpc.ScanServiceStub(channel)
    assert await _health(channel) == 1  # probes carry no token
    health_watch = health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(), timeout=TIMEOUT
    )
    assert (await health_watch.read()).status == 1
    health_watch.cancel()

    for metadata, words in (
        ((), "needs a bearer token"),
        (_auth("wrong-token-of-some-length"), "not accepted"),
        ((("authorization", f"Basic {TOKEN}"),), "not accepted"),
    ):
        calls: list[Callable[[], Awaitable[Any]]] = [
            lambda m=metadata: stub.GetJob(scan_pb2.GetJobRequest(job_id="j_x"), metadata=m),
            lambda m=metadata: stub.ListJobs(scan_pb2.ListJobsRequest(), metadata=m),
            lambda m=metadata: _read_all(
                stub.WatchJob(scan_pb2.WatchJobRequest(job_id="j_x"), metadata=m)
            ),
            lambda m=metadata: _reflection_services(channel, m),
            lambda m=metadata: channel.unary_unary("/mediascan.v1.ScanService/NoSuchMethod")(
                b"", metadata=m
            ),
        ]
        for call in calls:
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                await asyncio.wait_for(call(), TIMEOUT)
            assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED, metadata
            assert words in (raised.value.details() or "")
            assert TOKEN not in (raised.value.details() or "")

    # Either token of the file works, for calls, streams and reflection.
    for token in (TOKEN, OTHER_TOKEN):
        listed = await stub.ListJobs(scan_pb2.ListJobsRequest(), metadata=_auth(token))
        assert list(listed.jobs) == []
        services = await _reflection_services(channel, _auth(token))
        assert "mediascan.v1.ScanService" in services
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await _read_all(
            stub.WatchJob(scan_pb2.WatchJobRequest(job_id="j_none"), metadata=_auth(TOKEN))
        )
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND  # past the token check


async def _read_all(call: Any) -> list[Any]:
    return [item async for item in call]


def test_token_helpers(tmp_path: Path) -> None:
    assert bearer_token([("authorization", f"Bearer {TOKEN}")]) == TOKEN.encode()
    assert bearer_token([("Authorization", f"bearer   {TOKEN} ")]) == TOKEN.encode()
    assert bearer_token([("authorization", "Basic abc")]) == b""
    assert bearer_token([("x-other", "1")]) is None
    assert token_matches(TOKEN.encode(), [OTHER_TOKEN.encode(), TOKEN.encode()])
    assert not token_matches(TOKEN.encode()[:-1], [TOKEN.encode()])
    assert not token_matches(b"", [TOKEN.encode()])

    path = tmp_path / "tokens"
    path.write_text(f"  {TOKEN}  \n# a comment\n\n")
    assert read_tokens(path) == (TOKEN.encode(),)
    for text, words in (
        ("# only a comment\n", "holds no token"),
        ("short\n", "shorter than 16"),
        (f"{TOKEN} {TOKEN}\n", "line 1 is not a token"),
    ):
        path.write_text(text)
        with pytest.raises(SecurityError, match=words):
            read_tokens(path)
    with pytest.raises(SecurityError, match="cannot read"):
        read_tokens(tmp_path / "missing")


# -- grpcurl and the CLI over TLS with a token ---------------------------------------------------


async def _run(
    *args: str | Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(
        subprocess.run,
        [str(a) for a in args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )


async def test_grpcurl_over_tls_with_a_token(
    make_server: Any, pki: Pki, token_file: Path, grpcurl: Path
) -> None:
    server = await make_server(
        tls_cert=pki.server_cert, tls_key=pki.server_key, auth_token_file=token_file
    )
    base = (grpcurl, "-cacert", pki.ca, "-max-time", "30")
    listed = await _run(*base, "-H", f"authorization: Bearer {TOKEN}", server.address, "list")
    assert listed.returncode == 0, listed.stderr
    assert {"mediascan.v1.ScanService", "grpc.health.v1.Health"} <= set(listed.stdout.split())

    refused = await _run(*base, server.address, "list")
    assert refused.returncode != 0
    assert "Unauthenticated" in refused.stderr

    jobs = await _run(
        *base,
        "-H",
        f"authorization: Bearer {TOKEN}",
        "-d",
        "{}",
        server.address,
        "mediascan.v1.ScanService/ListJobs",
    )
    assert jobs.returncode == 0, jobs.stderr


async def test_grpcurl_over_mutual_tls(make_server: Any, pki: Pki, grpcurl: Path) -> None:
    server = await make_server(
        tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca
    )
    base = (grpcurl, "-cacert", pki.ca, "-max-time", "10")
    with_cert = await _run(
        *base, "-cert", pki.client_cert, "-key", pki.client_key, server.address, "list"
    )
    assert with_cert.returncode == 0, with_cert.stderr
    assert "mediascan.v1.ScanService" in with_cert.stdout.split()
    without = await _run(*base, server.address, "list")
    assert without.returncode != 0


async def test_cli_over_tls_with_token_from_the_environment(
    make_server: Any, pki: Pki, token_file: Path
) -> None:
    server = await make_server(
        tls_cert=pki.server_cert, tls_key=pki.server_key, auth_token_file=token_file
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASCAN_")}
    cli = (BIN / "mediascan", "--server", server.address, "--tls-ca", pki.ca)
    ok = await _run(*cli, "jobs", "--json", env={**env, "MEDIASCAN_TOKEN": TOKEN})
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip().startswith("{")

    flag = await _run(*cli, "--token", OTHER_TOKEN, "jobs", "--json", env=env)
    assert flag.returncode == 0, flag.stderr

    missing = await _run(*cli, "jobs", env=env)
    assert missing.returncode == 2
    assert "UNAUTHENTICATED" in missing.stderr
    wrong = await _run(*cli, "jobs", env={**env, "MEDIASCAN_TOKEN": "x" * 20})
    assert wrong.returncode == 2
    assert "not accepted" in wrong.stderr
    assert "x" * 20 not in wrong.stderr

    untrusted = await _run(
        BIN / "mediascan", "--server", server.address, "--tls-ca", pki.rogue_cert, "jobs", env=env
    )
    assert untrusted.returncode == 2
    assert "not trusted by the CA in --tls-ca" in untrusted.stderr


# -- exposure ------------------------------------------------------------------------------------


def test_loopback_addresses() -> None:
    for address in ("127.0.0.1:1", "127.8.9.10:50051", "[::1]:1", "localhost:1", "unix:/tmp/s"):
        assert is_loopback(address), address
    for address in ("0.0.0.0:1", "[::]:1", ":50051", "10.1.2.3:1", "example.com:1", "nonsense"):
        assert not is_loopback(address), address


def test_exposure_rules(tmp_path: Path) -> None:
    remote = {"listen": "0.0.0.0:50051"}
    with pytest.raises(SecurityError) as raised:
        check_exposure(Config(**remote))
    message = str(raised.value)
    assert "--allow-root" in message
    assert "--auth-token-file" in message
    assert "--insecure-allow-remote" in message
    assert "\n" not in message

    with pytest.raises(SecurityError) as raised:
        check_exposure(Config(**remote, allow_roots=(tmp_path,)))
    assert "--allow-root" not in str(raised.value)
    assert "--auth-token-file" in str(raised.value)
    with pytest.raises(SecurityError, match="--allow-root DIR"):
        check_exposure(Config(**remote, auth_token_file=tmp_path / "t"))

    tls = {"tls_cert": tmp_path / "c", "tls_key": tmp_path / "k"}
    check_exposure(Config(**remote, allow_roots=(tmp_path,), auth_token_file=tmp_path / "t"))
    check_exposure(Config(**remote, allow_roots=(tmp_path,), tls_client_ca=tmp_path, **tls))
    check_exposure(Config(**remote, insecure_allow_remote=True))
    check_exposure(Config(listen="127.0.0.1:50051"))


async def test_server_refuses_a_non_loopback_address_without_protection(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASCAN_")}
    result = await _run(
        BIN / "mediascan-server", "--listen", "0.0.0.0:0", "--db", tmp_path / "db", env=env
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("mediascan-server: refusing to listen on 0.0.0.0:0")
    assert "--allow-root" in lines[0]
    assert "--insecure-allow-remote" in lines[0]
    assert not (tmp_path / "db").exists()  # refused before anything was created
    assert result.stdout == ""


async def test_server_listens_remotely_with_roots_and_a_token(
    spawn_server: Any, tmp_path: Path, token_file: Path, channel_to: Connect
) -> None:
    server = await spawn_server(
        "--listen", "0.0.0.0:0", "--allow-root", str(tmp_path), "--auth-token-file", str(token_file)
    )
    assert server.address.startswith("0.0.0.0:")
    port = server.address.rsplit(":", 1)[1]
    channel = await channel_to(f"127.0.0.1:{port}", plaintext=True)
    assert await _health(channel) == 1
    server.terminate()
    assert await server.wait(30) == 0


async def test_server_listens_remotely_when_told_it_is_insecure(
    spawn_server: Any, channel_to: Connect
) -> None:
    server = await spawn_server("--listen", "0.0.0.0:0", "--insecure-allow-remote")
    port = server.address.rsplit(":", 1)[1]
    assert await _health(await channel_to(f"127.0.0.1:{port}", plaintext=True)) == 1
    server.terminate()
    assert await server.wait(30) == 0


async def test_bad_security_files_stop_the_server_with_a_clear_message(
    tmp_path: Path, pki: Pki
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASCAN_")}
    server = (BIN / "mediascan-server", "--listen", "127.0.0.1:0", "--db", tmp_path / "db")
    empty = tmp_path / "empty"
    empty.write_text("\n")
    for args, words in (
        (("--auth-token-file", empty), "holds no token"),
        (("--tls-cert", tmp_path / "nope.pem", "--tls-key", pki.server_key), "--tls-cert"),
        (("--tls-cert", pki.server_key, "--tls-key", pki.server_key), "not a PEM file"),
        (("--tls-cert", pki.server_cert), "go together"),
        (("--tls-client-ca", pki.ca), "needs TLS"),
    ):
        result = await _run(*server, *args, env=env)
        assert result.returncode == 2, (args, result.stderr)
        assert words in result.stderr, (args, result.stderr)


def test_security_flags_and_environment_twins(tmp_path: Path) -> None:
    config = load_config(
        ["--tls-cert", "c.pem", "--tls-key", "k.pem", "--tls-client-ca", "ca.pem"], env={}
    )
    assert config.tls_cert == Path("c.pem")
    assert config.tls_client_ca == Path("ca.pem")
    assert config.insecure_allow_remote is False
    config = load_config(
        [],
        env={
            "MEDIASCAN_INSECURE_ALLOW_REMOTE": "true",
            "MEDIASCAN_AUTH_TOKEN_FILE": "/etc/mediascan/tokens",
            "MEDIASCAN_MAX_CONCURRENT_STREAMS": "7",
            "MEDIASCAN_KEEPALIVE_TIME": "2m",
        },
    )
    assert config.insecure_allow_remote is True
    assert config.auth_token_file == Path("/etc/mediascan/tokens")
    assert config.max_concurrent_streams == 7
    assert config.keepalive_time == 120.0
    assert load_config(["--insecure-allow-remote"], env={}).insecure_allow_remote
    with pytest.raises(SystemExit):
        load_config([], env={"MEDIASCAN_INSECURE_ALLOW_REMOTE": "maybe"})


# -- limits --------------------------------------------------------------------------------------


async def test_a_request_over_the_size_limit_is_refused(server: Any, channel_to: Connect) -> None:
    stub = scan_pb2_grpc.ScanServiceStub(await channel_to(server.address, plaintext=True))
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.SubmitScan(
            scan_pb2.SubmitScanRequest(path="/" + "a" * (2 * 1024 * 1024)), timeout=TIMEOUT
        )
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


async def test_concurrent_streams_per_connection_are_limited(
    make_server: Any, channel_to: Connect
) -> None:
    server = await make_server(max_concurrent_streams=1)
    first = await channel_to(server.address, plaintext=True)
    watch = health_pb2_grpc.HealthStub(first).Watch(health_pb2.HealthCheckRequest())
    assert (await watch.read()).status == 1  # the connection's one stream is now taken
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await health_pb2_grpc.HealthStub(first).Check(health_pb2.HealthCheckRequest(), timeout=1)
    assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    # Another connection has streams of its own.
    assert await _health(await channel_to(server.address, plaintext=True)) == 1
    watch.cancel()
    assert await _health(first) == 1
