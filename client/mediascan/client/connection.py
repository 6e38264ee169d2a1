"""`Connection`: the channels to one server or to several that share one database, and how a
call reaches them: one server at a time, unary calls that move on to the next server when one
cannot be reached, List calls followed page by page, and server streams that reconnect with
backoff when they break."""

from __future__ import annotations

import asyncio
import json
import os
import random
from collections.abc import AsyncGenerator, Callable, Sequence
from typing import Protocol, TypeVar

import grpc

from mediascan.client.errors import MediascanError
from mediascan.client.stub import Stub

_SERVICE = "mediascan.v1.ScanService"

# The calls that are safe to repeat: reads, CancelJob (idempotent), UpdateLibrary (the same
# values again) and SubmitScan, whose `request_id` makes a repeat return the job the first
# attempt created. gRPC retries them itself on UNAVAILABLE (a connection that broke before the
# server answered), and the client then tries the next server. DeleteJob, CreateLibrary and
# DeleteLibrary are left out: a repeat of one that did happen would answer NOT_FOUND or
# ALREADY_EXISTS; they move to the next server only when they could not reach the first at all.
RETRY_SAFE = (
    "SubmitScan",
    "GetJob",
    "CancelJob",
    "ListJobs",
    "ListFileErrors",
    "ListVideos",
    "GetVideo",
    "ListDuplicates",
    "GetLibrary",
    "ListLibraries",
    "UpdateLibrary",
)

_SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [{"service": _SERVICE, "method": method} for method in RETRY_SAFE],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.1s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ]
}

_CHANNEL_OPTIONS: list[tuple[str, str | int]] = [
    ("grpc.service_config", json.dumps(_SERVICE_CONFIG)),
    # Reconnect quickly after a server restart (the defaults wait 1 s, growing to 2 minutes).
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2000),
]

#: How gRPC words a call that could not connect, so that the request never left the client.
_NOT_CONNECTED = ("failed to connect to all addresses", "DNS resolution failed", "errors resolving")

_Request = TypeVar("_Request")
_Response = TypeVar("_Response")


class _PagedRequest(Protocol):
    page_token: str


class _Page(Protocol):
    next_page_token: str


_Paged = TypeVar("_Paged", bound=_PagedRequest)
_PageT = TypeVar("_PageT", bound=_Page)


class Backoff:
    """Exponential backoff delays with jitter: 0.05 s doubling up to 2 s."""

    def __init__(self, first: float = 0.05, cap: float = 2.0) -> None:
        self._first = first
        self._cap = cap
        self._next = first

    def reset(self) -> None:
        self._next = self._first

    def delay(self) -> float:
        """The next delay: between half and all of the current step, which then doubles."""
        step = self._next
        self._next = min(self._cap, step * 2)
        return random.uniform(step / 2, step)


def split_targets(target: str | Sequence[str]) -> tuple[str, ...]:
    """The server addresses of `target`: one address, several separated by commas
    (`"a:50051,b:50051"`), or a sequence of addresses. Raises ValueError for an empty one."""
    targets = target.split(",") if isinstance(target, str) else list(target)
    stripped = tuple(address.strip() for address in targets)
    if not stripped or not all(stripped):
        shown = target if isinstance(target, str) else ",".join(target)
        raise ValueError(f"an empty server address in {shown!r}: give host:port[,host:port...]")
    return stripped


def _check_token(token: str) -> str:
    token = token.strip()
    if not token or any(c.isspace() for c in token) or not token.isprintable():
        raise ValueError("a token is one word of printable characters, without spaces")
    return token


def _read(what: str, path: str | os.PathLike[str] | None) -> bytes | None:
    if path is None:
        return None
    try:
        with open(path, "rb") as file:
            return file.read()
    except OSError as exc:
        raise ValueError(f"cannot read the {what} {os.fspath(path)}: {exc.strerror}") from None


def _tls_credentials(
    ca: str | os.PathLike[str] | None,
    cert: str | os.PathLike[str] | None,
    key: str | os.PathLike[str] | None,
) -> grpc.ChannelCredentials:
    if (cert is None) != (key is None):
        raise ValueError("tls_cert and tls_key go together: give both, or neither")
    return grpc.ssl_channel_credentials(
        root_certificates=_read("CA certificate file", ca),
        private_key=_read("client key file", key),
        certificate_chain=_read("client certificate file", cert),
    )


def _resumable(error: grpc.aio.AioRpcError) -> bool:
    """A broken stream to resume elsewhere: UNAVAILABLE, or a CANCELLED this client did not
    cause (its own cancel raises CancelledError instead): gRPC cancels a call that arrives just
    as a server shuts down."""
    return error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)


def _fails_over(error: grpc.aio.AioRpcError, retry_safe: bool) -> bool:
    """Whether a unary call that failed this way goes on to the next server: on UNAVAILABLE if
    it is safe to repeat, else only if it never reached a server."""
    if error.code() != grpc.StatusCode.UNAVAILABLE:
        return False
    return retry_safe or (error.details() or "").startswith(_NOT_CONNECTED)


class _Node:
    """One server address and the channel to it."""

    def __init__(self, target: str, channel: grpc.aio.Channel) -> None:
        self.target = target
        self.channel = channel
        self.stub = Stub(channel)

    def error(self, error: grpc.aio.AioRpcError) -> MediascanError:
        """The call's failure as a MediascanError that names this node."""
        not_connected = error.code() == grpc.StatusCode.UNAVAILABLE and (
            (error.details() or "").startswith(_NOT_CONNECTED)
            or self.channel.get_state() == grpc.ChannelConnectivity.TRANSIENT_FAILURE
        )
        return MediascanError.from_rpc_error(error, target=self.target, unreachable=not_connected)


def _nodes(
    targets: tuple[str, ...],
    channel: grpc.aio.Channel | None,
    tls: bool,
    tls_ca: str | os.PathLike[str] | None,
    tls_cert: str | os.PathLike[str] | None,
    tls_key: str | os.PathLike[str] | None,
    tls_server_name: str | None,
) -> list[_Node]:
    """A node for each address: on `channel`, or on a channel of its own, with TLS if asked."""
    uses_tls = tls or any(x is not None for x in (tls_ca, tls_cert, tls_key, tls_server_name))
    if channel is not None:
        if uses_tls:
            raise TypeError("pass either a channel or TLS options, not both")
        if len(targets) > 1:
            raise TypeError("pass either a channel or several addresses, not both")
        return [_Node(targets[0], channel)]
    if uses_tls:
        credentials = _tls_credentials(tls_ca, tls_cert, tls_key)
        options = list(_CHANNEL_OPTIONS)
        if tls_server_name:
            options.append(("grpc.ssl_target_name_override", tls_server_name))
        return [_Node(t, grpc.aio.secure_channel(t, credentials, options=options)) for t in targets]
    return [_Node(t, grpc.aio.insecure_channel(t, options=_CHANNEL_OPTIONS)) for t in targets]


class Connection:
    """The channels to the servers at `target` (see `ScanClient` for the arguments), and the
    calls on them. Calls go to one server, the current one, until a call cannot use it."""

    def __init__(
        self,
        target: str | Sequence[str],
        *,
        channel: grpc.aio.Channel | None = None,
        token: str | None = None,
        tls: bool = False,
        tls_ca: str | os.PathLike[str] | None = None,
        tls_cert: str | os.PathLike[str] | None = None,
        tls_key: str | os.PathLike[str] | None = None,
        tls_server_name: str | None = None,
    ) -> None:
        targets = split_targets(target)
        self._owns_channel = channel is None
        self._metadata: tuple[tuple[str, str], ...] = ()
        if token is not None:
            self._metadata = (("authorization", f"Bearer {_check_token(token)}"),)
        self._nodes = _nodes(targets, channel, tls, tls_ca, tls_cert, tls_key, tls_server_name)
        #: The node calls go to; it moves on when a call cannot use it.
        self._current = 0

    @property
    def target(self) -> str:
        """The address of the server calls go to now (the first until one fails)."""
        return self._nodes[self._current].target

    @property
    def targets(self) -> tuple[str, ...]:
        """Every server address, in order."""
        return tuple(node.target for node in self._nodes)

    @property
    def channel(self) -> grpc.aio.Channel:
        """The channel to the server calls go to now (see `target`)."""
        return self._nodes[self._current].channel

    async def close(self) -> None:
        """Close the channels (unless passed in); calls still running are cancelled."""
        if self._owns_channel:
            for node in self._nodes:
                await node.channel.close(None)

    def _round(self) -> list[_Node]:
        """Every node once, starting with the current one."""
        start = self._current
        return self._nodes[start:] + self._nodes[:start]

    def _next(self, failed: _Node) -> _Node:
        """The node after `failed`; it becomes the current one if `failed` still was (a call
        running alongside may have moved on already)."""
        index = (self._nodes.index(failed) + 1) % len(self._nodes)
        if self._nodes[self._current] is failed:
            self._current = index
        return self._nodes[index]

    async def call(
        self,
        method: Callable[[Stub], grpc.aio.UnaryUnaryMultiCallable[_Request, _Response]],
        request: _Request,
        *,
        retry_safe: bool = True,
    ) -> _Response:
        """One unary call, on the current node, moving on to the next node while it fails over
        (the same request: a submit keeps its request_id). Raises MediascanError."""
        earlier: list[MediascanError] = []
        nodes = self._round()
        for node in nodes:
            try:
                return await method(node.stub)(request, metadata=self._metadata)
            except grpc.aio.AioRpcError as rpc_error:
                error = node.error(rpc_error)
                if node is nodes[-1] or not _fails_over(rpc_error, retry_safe):
                    error.earlier = tuple(earlier)
                    raise error from rpc_error
                earlier.append(error)
                self._next(node)
        raise AssertionError("a connection has at least one node")  # pragma: no cover

    async def pages(
        self,
        method: Callable[[Stub], grpc.aio.UnaryUnaryMultiCallable[_Paged, _PageT]],
        request: _Paged,
    ) -> AsyncGenerator[_PageT, None]:
        """Every page of a List call (AIP-158), following `next_page_token` until it is
        empty."""
        while True:
            page = await self.call(method, request)
            yield page
            if not page.next_page_token:
                return
            request.page_token = page.next_page_token

    async def stream(
        self,
        method: Callable[[Stub], grpc.aio.UnaryStreamMultiCallable[_Request, _Response]],
        request: Callable[[], _Request],
        *,
        reconnect_timeout: float | None,
    ) -> AsyncGenerator[_Response, None]:
        """The messages of a server stream, until a stream ends OK.

        When a stream breaks (UNAVAILABLE, or a CANCELLED this client did not cause), this
        reconnects with backoff, to the next node when there are several; `request()` makes the
        request of each connection, so that it can resume after the last message its caller
        saw. Raises MediascanError at once for any other error, and when reconnecting has not
        worked for `reconnect_timeout` seconds (None: never)."""
        loop = asyncio.get_running_loop()
        backoff = Backoff()
        failing_since: float | None = None
        #: Each node's latest failure since the stream last gave a message.
        failures: dict[str, MediascanError] = {}
        node = self._nodes[self._current]
        while True:
            call = method(node.stub)(request(), metadata=self._metadata)
            try:
                async for message in call:
                    failing_since = None
                    failures.clear()
                    backoff.reset()
                    yield message
                return
            except grpc.aio.AioRpcError as rpc_error:
                error = node.error(rpc_error)
                if not _resumable(rpc_error):
                    raise error from rpc_error
                failures.pop(node.target, None)
                now = loop.time()
                if failing_since is None:
                    failing_since = now
                elif reconnect_timeout is not None and now - failing_since >= reconnect_timeout:
                    error.earlier = tuple(failures.values())
                    raise error from rpc_error
                failures[node.target] = error
                node = self._next(node)
                delay = backoff.delay()
                if reconnect_timeout is not None:
                    delay = min(delay, failing_since + reconnect_timeout - now)
                await asyncio.sleep(delay)
            finally:
                call.cancel()
