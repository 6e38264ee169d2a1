"""Who may talk to the server: TLS and mutual-TLS credentials, bearer tokens checked by a server
interceptor, and the refusal to listen on a non-loopback address without protection.

Tokens are compared in constant time and never logged, not even in part. Health checks
(`grpc.health.v1.Health`) stay open so that load balancers and Kubernetes probes, which carry no
token, can use them; everything else, server reflection included, needs a token when auth is on.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import logging
import os
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc

from .config import Config, split_host_port
from .grpc_types import Continuation, Handler, Interceptor
from .logs import limited, register_secrets

log = logging.getLogger(__name__)
#: Refused calls are logged at most LOG_BURST a window: anyone can send them.
_REFUSALS = limited(log, "refused calls")

#: Calls under this prefix need no token: liveness and readiness probes carry none.
OPEN_PREFIXES = ("/grpc.health.v1.Health/",)
AUTH_HEADER = "authorization"


class SecurityError(Exception):
    """The security configuration cannot work (a missing file, an empty token file, ...), or
    the server would be exposed without protection. The message names the flag to fix."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Security:
    """What app.py needs to serve: port credentials (None: plaintext) and accepted tokens."""

    credentials: grpc.ServerCredentials | None
    tokens: tuple[bytes, ...]
    mutual_tls: bool = False


def load_security(config: Config) -> Security:
    """Read the certificates and tokens the configuration names. Raises SecurityError."""
    credentials = None
    if config.tls_cert is not None and config.tls_key is not None:
        client_ca = None
        if config.tls_client_ca is not None:
            client_ca = _read_pem("--tls-client-ca", config.tls_client_ca, "CERTIFICATE")
        credentials = grpc.ssl_server_credentials(
            [
                (
                    _read_pem("--tls-key", config.tls_key, "PRIVATE KEY"),
                    _read_pem("--tls-cert", config.tls_cert, "CERTIFICATE"),
                )
            ],
            root_certificates=client_ca,
            require_client_auth=client_ca is not None,
        )
    tokens: tuple[bytes, ...] = ()
    if config.auth_token_file is not None:
        tokens = read_tokens(config.auth_token_file)
    return Security(
        credentials=credentials, tokens=tokens, mutual_tls=config.tls_client_ca is not None
    )


def _read_pem(flag: str, path: Path, kind: str) -> bytes:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SecurityError(f"{flag} {path}: cannot read it: {exc.strerror}") from None
    if f"-----BEGIN {kind}".encode() not in data and not (
        kind == "PRIVATE KEY" and b"PRIVATE KEY-----" in data
    ):
        raise SecurityError(f"{flag} {path}: not a PEM file holding a {kind.lower()}")
    return data


def read_tokens(path: Path) -> tuple[bytes, ...]:
    """The tokens of a token file: one per line; blank lines and `#` comments are skipped."""
    try:
        text = path.read_text(encoding="utf-8")
        mode = path.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SecurityError(f"--auth-token-file {path}: cannot read it: {reason}") from None
    tokens = []
    for number, line in enumerate(text.splitlines(), 1):
        token = line.strip()
        if not token or token.startswith("#"):
            continue
        if any(c.isspace() for c in token) or not token.isprintable() or not token.isascii():
            raise SecurityError(
                f"--auth-token-file {path}: line {number} is not a token (one printable ASCII "
                "word per line, without spaces)"
            )
        if len(token) < 16:
            raise SecurityError(
                f"--auth-token-file {path}: the token on line {number} is shorter than 16 "
                "characters: use a random one, e.g. from `openssl rand -hex 32`"
            )
        tokens.append(token.encode())
    if not tokens:
        raise SecurityError(f"--auth-token-file {path}: holds no token (one per line)")
    register_secrets(t.decode() for t in tokens)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("the token file %s can be read by other users: chmod 600 it", os.fspath(path))
    return tuple(tokens)


# -- exposure -----------------------------------------------------------------------------------


def is_loopback(listen: str) -> bool:
    """True for addresses only this machine can reach: 127.0.0.0/8, ::1, localhost, unix:."""
    if listen.startswith(("unix:", "unix-abstract:")):
        return True
    try:
        host, _ = split_host_port(listen)
    except ValueError:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name (or all interfaces, ""): it may be reachable from elsewhere


def check_exposure(config: Config) -> None:
    """Refuse a non-loopback listen address that lacks allowed roots or authentication, unless
    --insecure-allow-remote says so. Raises SecurityError with a one-line message."""
    if config.insecure_allow_remote or is_loopback(config.listen):
        return
    missing = []
    if not config.allow_roots:
        missing.append("--allow-root DIR (the folders clients may scan)")
    if config.auth_token_file is None and config.tls_client_ca is None:
        missing.append(
            "--auth-token-file FILE (bearer tokens) or --tls-client-ca FILE with "
            "--tls-cert/--tls-key (mutual TLS)"
        )
    if not missing:
        return
    raise SecurityError(
        f"refusing to listen on {config.listen}, an address other machines can reach, without "
        f"protection: add {' and '.join(missing)}, or add --insecure-allow-remote to accept the "
        "risk"
    )


# -- the token check ----------------------------------------------------------------------------


def token_matches(presented: bytes, tokens: Sequence[bytes]) -> bool:
    """Constant-time comparison against every accepted token (no early exit on a match)."""
    matched = False
    for token in tokens:
        matched |= hmac.compare_digest(presented, token)
    return matched


def bearer_token(metadata: Sequence[tuple[str, str | bytes]] | None) -> bytes | None:
    """The token of the first `authorization: Bearer ...` header; None when there is none."""
    for key, value in metadata or ():
        if key.lower() != AUTH_HEADER:
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        scheme, _, token = text.strip().partition(" ")
        if scheme.lower() != "bearer":
            return b""
        return token.strip().encode("utf-8", "replace")
    return None


class TokenAuthInterceptor(Interceptor):
    """UNAUTHENTICATED for any call (reflection too) without a valid bearer token, except the
    health service."""

    def __init__(self, tokens: Sequence[bytes]) -> None:
        if not tokens:
            raise ValueError("TokenAuthInterceptor needs at least one token")
        self._tokens = tuple(tokens)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        method = handler_call_details.method
        if method.startswith(OPEN_PREFIXES):
            return await continuation(handler_call_details)
        presented = bearer_token(handler_call_details.invocation_metadata)  # type: ignore[arg-type]
        if presented is None:
            why = (
                "this server needs a bearer token: send the metadata 'authorization: Bearer "
                "<token>' (mediascan --token, or the MEDIASCAN_TOKEN environment variable)"
            )
        elif not presented or not token_matches(presented, self._tokens):
            why = (
                "the bearer token was not accepted: send 'authorization: Bearer <token>' with "
                "a token from the server's --auth-token-file"
            )
        else:
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        return refusal(handler, grpc.StatusCode.UNAUTHENTICATED, why, method)


def refusal(handler: Handler | None, code: grpc.StatusCode, message: str, method: str) -> Handler:
    """A handler of the same shape as `handler` that fails every call with `code`."""

    async def deny(context: grpc.aio.ServicerContext[Any, Any]) -> None:
        _REFUSALS.log(
            logging.INFO, "refused a call to %s from %s: %s", method, context.peer(), code.name
        )
        await context.abort(code, message)

    async def unary(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await deny(context)

    async def streaming(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await deny(context)
        yield  # pragma: no cover - an async generator that never yields

    deserializer = handler.request_deserializer if handler is not None else None
    serializer = handler.response_serializer if handler is not None else None
    if handler is not None and handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streaming, deserializer, serializer)
    if handler is not None and handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(unary, deserializer, serializer)
    if handler is not None and handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(streaming, deserializer, serializer)
    # Unary (or unknown: an unauthenticated caller learns nothing about which methods exist).
    return grpc.unary_unary_rpc_method_handler(unary, deserializer, serializer)
