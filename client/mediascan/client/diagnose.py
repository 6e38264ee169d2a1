"""Why a connection to the server failed, in words a user can act on.

gRPC reports every failure to connect as `UNAVAILABLE` with the last address's error, which for
`localhost` is usually the IPv6 address that nothing listens on, so a TLS mismatch reads like a
server that is not running. After a call could not connect, `diagnose` probes the address itself
(a TCP connection, then TLS handshakes with Python's `ssl`) and names the cause: nothing listening,
TLS on one side only, a certificate the client does not trust, a certificate that does not cover
the address, or a client certificate that the server requires or refuses. `diagnose_each` probes
several addresses side by side. Both are blocking: run them in a thread.
"""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import ssl
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

#: What a probe may take, per step (connect, handshake, first read).
PROBE_TIMEOUT = 3.0

# The HTTP/2 client preface: after a handshake, the server answers it, or refuses our certificate.
_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ClientTls:
    """How the client meant to connect: the `ScanClient` security options that matter here."""

    tls: bool = False
    tls_ca: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    tls_server_name: str | None = None

    @property
    def enabled(self) -> bool:
        return self.tls or self.tls_ca is not None or self.tls_cert is not None


def split_target(target: str) -> tuple[str, int] | None:
    """`host:port`, `[v6]:port` or `dns:///host:port` as (host, port); None for other schemes."""
    if target.startswith("dns:///"):
        target = target[len("dns:///") :]
    elif "://" in target or target.startswith("unix:"):
        return None
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def diagnose(target: str, client: ClientTls, *, timeout: float = PROBE_TIMEOUT) -> str | None:
    """The cause of a failed connection to `target` and its fix; None if the probes find none."""
    address = split_target(target)
    if address is None:
        return None
    host, port = address
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        return f"cannot resolve {host!r}: {exc}; check --server"
    errors: list[str] = []
    for family, kind, proto, _, sockaddr in infos:
        try:
            with socket.socket(family, kind, proto) as probe:
                probe.settimeout(timeout)
                probe.connect(sockaddr)
        except OSError as exc:
            errors.append(f"{sockaddr[0]}: {exc.strerror or exc}")
            continue
        return _tls_mismatch(host, sockaddr, family, client, timeout)
    return (
        f"nothing accepts connections there ({'; '.join(errors)}): is the server running "
        "(start it with 'make run'), and listening on this address (its --listen)?"
    )


def diagnose_each(
    targets: Sequence[str], client: ClientTls, *, timeout: float = PROBE_TIMEOUT
) -> dict[str, str | None]:
    """`diagnose` of each address (each once), probed side by side: address -> cause or None."""
    unique = list(dict.fromkeys(targets))
    if not unique:
        return {}
    with ThreadPoolExecutor(max_workers=min(8, len(unique))) as pool:
        causes = pool.map(lambda target: diagnose(target, client, timeout=timeout), unique)
        return dict(zip(unique, causes, strict=True))


def _tls_mismatch(
    host: str, sockaddr: tuple[object, ...], family: int, client: ClientTls, timeout: float
) -> str | None:
    server_tls = _speaks_tls(sockaddr, family, timeout)
    if server_tls is None:
        return None
    if server_tls and not client.enabled:
        return (
            "the server uses TLS and this client does not: add --tls-ca FILE (the CA that "
            "signed the server's certificate), or --tls to trust the system's CAs"
        )
    if not server_tls and client.enabled:
        return (
            "the server does not use TLS (it answered the TLS handshake in plaintext): drop "
            "--tls, --tls-ca, --tls-cert and --tls-key, or give the server --tls-cert/--tls-key"
        )
    if not server_tls:
        return None
    return _certificate_problem(host, sockaddr, family, client, timeout)


def _speaks_tls(sockaddr: tuple[object, ...], family: int, timeout: float) -> bool | None:
    """True if the server completes a TLS handshake, False if it answers without TLS."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    context.set_alpn_protocols(["h2"])
    try:
        with _connected(sockaddr, family, timeout) as raw, context.wrap_socket(raw):
            return True
    except ssl.SSLError:
        return False
    except OSError:  # reset or closed during the handshake: a plaintext server hanging up
        return False


def _certificate_problem(
    host: str, sockaddr: tuple[object, ...], family: int, client: ClientTls, timeout: float
) -> str | None:
    name = client.tls_server_name or host
    context = ssl.create_default_context(cafile=client.tls_ca)
    context.check_hostname = False
    context.set_alpn_protocols(["h2"])
    if client.tls_cert is not None and client.tls_key is not None:
        context.load_cert_chain(client.tls_cert, client.tls_key)
    try:
        with (
            _connected(sockaddr, family, timeout) as raw,
            context.wrap_socket(raw, server_hostname=name) as tls,
        ):
            names = _names(tls.getpeercert() or {})
            refusal = _client_refused(tls, client)
    except ssl.SSLCertVerificationError as exc:
        trusted = f"the CA in --tls-ca {client.tls_ca}" if client.tls_ca else "the system's CAs"
        return (
            f"the server's certificate is not trusted by {trusted} ({exc.verify_message}): "
            "pass the CA that signed it with --tls-ca"
        )
    except (ssl.SSLError, OSError):
        return None
    if refusal is not None:
        return refusal
    if name not in names and not _wildcard_covers(names, name):
        shown = ", ".join(names) or "no names"
        return (
            f"the server's certificate does not cover {name!r} (it names {shown}): connect by "
            "one of those names, or pass --tls-server-name with one of them"
        )
    return None


def _client_refused(tls: ssl.SSLSocket, client: ClientTls) -> str | None:
    """After the handshake, a server that wants another client certificate hangs up or sends an
    alert (TLS 1.3 checks it after the handshake): send the HTTP/2 preface and read the answer."""
    try:
        tls.sendall(_PREFACE)
        answered = bool(tls.recv(1))
    except (ssl.SSLError, ConnectionError):
        answered = False
    except OSError:
        return None
    if answered:
        return None
    if client.tls_cert is None:
        return (
            "the server requires a client certificate (mutual TLS): pass --tls-cert and "
            "--tls-key, signed by the CA the server trusts"
        )
    return (
        "the server refused the client certificate in --tls-cert: use one signed by the CA "
        "the server trusts (its --tls-client-ca)"
    )


def _names(certificate: Mapping[str, object]) -> list[str]:
    alt = certificate.get("subjectAltName", ())
    assert isinstance(alt, tuple)
    return [str(value) for kind, value in alt if kind in ("DNS", "IP Address")]


def _wildcard_covers(names: list[str], host: str) -> bool:
    head, _, rest = host.partition(".")
    return bool(head) and f"*.{rest}" in names


@contextlib.contextmanager
def _connected(
    sockaddr: tuple[object, ...], family: int, timeout: float
) -> Iterator[socket.socket]:
    raw = socket.socket(family, socket.SOCK_STREAM)
    try:
        raw.settimeout(timeout)
        raw.connect(sockaddr)
        yield raw
    finally:
        raw.close()
