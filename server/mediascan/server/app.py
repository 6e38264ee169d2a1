"""Wiring and life cycle: builds the store, queue, scanner and gRPC server, starts them in order,
watches the background tasks, and shuts everything down gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mediascan.v1 import scan_pb2, scan_pb2_grpc

from .config import Config
from .decoding import RequestDecodingInterceptor
from .events import EventHub
from .metrics import Metrics
from .probe_pool import ProbePool
from .queue import LocalJobQueue
from .reflection import enable_reflection
from .scanner import Prober, Scanner
from .security import (
    Security,
    SecurityError,
    TokenAuthInterceptor,
    check_exposure,
    load_security,
)
from .service import ScanService
from .store import Store

log = logging.getLogger(__name__)

SERVICE_NAME = scan_pb2.DESCRIPTOR.services_by_name["ScanService"].full_name
#: Events per job kept in memory for live watchers (older ones are read from the store).
RING_SIZE = 1024
#: How often finished jobs past their retention are purged (seconds).
PURGE_INTERVAL = 3600.0
#: Largest request message accepted (bytes); a bigger one gets RESOURCE_EXHAUSTED.
MAX_REQUEST_BYTES = 1024 * 1024
#: Clients may send keepalive pings this often (ms), with or without calls in flight; more
#: often and the server closes the connection (GOAWAY too_many_pings).
MIN_CLIENT_PING_INTERVAL_MS = 10_000


class ConfigError(Exception):
    """The configuration cannot work (e.g. an allowed root that does not exist)."""


class MediascanServer:
    """One mediascan server process: `await start()`, then `await stop()`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._store: Store | None = None
        self._queue: LocalJobQueue | None = None
        self._hub: EventHub | None = None
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        self._probe_pool: ProbePool | None = None
        self._walk_pool: ThreadPoolExecutor | None = None
        self._side_tasks: dict[str, asyncio.Task[None]] = {}
        self._failed = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._security: Security | None = None
        self.metrics: Metrics | None = None
        self.metrics_port = 0

    @property
    def address(self) -> str:
        host = self.config.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    @property
    def metrics_address(self) -> str:
        """host:port of the /metrics endpoint ("" without --metrics-listen)."""
        if self.metrics is None:
            return ""
        return f"{self.config.metrics_listen.rsplit(':', 1)[0]}:{self.metrics_port}"

    @property
    def queue(self) -> LocalJobQueue:
        assert self._queue is not None, "start() the server first"
        return self._queue

    async def start(self) -> None:
        """Open the database, re-queue unfinished jobs, bind, and report SERVING."""
        config = self.config
        try:
            check_exposure(config)
            self._security = security = await asyncio.to_thread(load_security, config)
        except SecurityError as exc:
            raise ConfigError(str(exc)) from None
        roots = await asyncio.to_thread(_resolve_roots, config.allow_roots)
        try:
            await self._assemble(config, security, roots)
        except BaseException:
            await self._abandon_start()  # nothing half-started may keep running
            raise
        log.info(
            "serving on %s (db %s, %d workers, %s, %s)",
            self.address,
            config.db,
            config.workers,
            "mutual TLS" if security.mutual_tls else "TLS" if config.tls else "plaintext",
            "token auth" if security.tokens else "no token auth",
        )
        if self.metrics is not None:
            log.info("metrics on http://%s/metrics", self.metrics_address)

    async def _assemble(self, config: Config, security: Security, roots: list[str]) -> None:
        """Metrics, store, probers, queue, then the gRPC server (see `_serve`)."""
        interceptors: list[grpc.aio.ServerInterceptor[Any, Any]] = []
        if config.metrics_listen:
            self.metrics = Metrics()
            try:
                _, self.metrics_port = self.metrics.serve(config.metrics_listen)
            except OSError as exc:
                self.metrics = None
                raise ConfigError(
                    f"--metrics-listen {config.metrics_listen}: cannot listen: {exc.strerror}"
                ) from None
            interceptors.append(self.metrics.interceptor())  # outermost: sees refusals too
        if security.tokens:
            interceptors.append(TokenAuthInterceptor(security.tokens))
        interceptors.append(RequestDecodingInterceptor())  # innermost: after the token check
        self._store = Store(config.db)
        await self._store.open()
        self._hub = EventHub(
            self._store,
            ring_size=min(RING_SIZE, config.event_log_size),
            log_size=config.event_log_size,
        )
        self._probe_pool = ProbePool(config.probe_workers, config.probe_timeout)
        await self._probe_pool.start()
        prober: Prober = self._probe_pool
        if self.metrics is not None:
            prober = self.metrics.prober(self._probe_pool)
        # One walker thread per running job, apart from the loop's default executor.
        self._walk_pool = ThreadPoolExecutor(config.workers, thread_name_prefix="walk")
        scanner = Scanner(
            self._store,
            prober,
            self._walk_pool,
            probe_concurrency=config.probe_concurrency,
            roots=tuple(roots),
        )
        self._queue = LocalJobQueue(self._store, self._hub, scanner, config)
        if self.metrics is not None:
            queue = self._queue
            queue.state_listeners.append(self.metrics.job_changed)
            self.metrics.watch_queue(lambda: queue.queued_count, lambda: queue.running_count)
        await self._serve(config, security, interceptors, roots)

    async def _serve(
        self,
        config: Config,
        security: Security,
        interceptors: list[grpc.aio.ServerInterceptor[Any, Any]],
        roots: list[str],
    ) -> None:
        """Bind the port (so that a taken port fails before any job runs), recover and start
        the jobs, then serve."""
        assert self._queue is not None and self._store is not None
        server = grpc.aio.server(interceptors=interceptors, options=server_options(config))
        scan_pb2_grpc.add_ScanServiceServicer_to_server(  # type: ignore[no-untyped-call]
            ScanService(self._queue, self._store, config, roots), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        enable_reflection((SERVICE_NAME, health.SERVICE_NAME), server)
        try:
            if security.credentials is not None:
                self.port = server.add_secure_port(config.listen, security.credentials)
            else:
                self.port = server.add_insecure_port(config.listen)
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {config.listen}: {exc}") from None
        await self._queue.start()
        self._server = server
        await server.start()
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        dispatcher = self._queue.dispatcher
        assert dispatcher is not None
        self._watch(dispatcher)
        self._watch(asyncio.create_task(self._purge_loop(), name="retention-purge"))

    async def _abandon_start(self) -> None:
        """Undo a start that failed half-way: nothing may keep running."""
        self._stopping = True
        if self._queue is not None and self._queue.dispatcher is not None:
            await self._queue.drain(0)
        if self._probe_pool is not None:
            await self._probe_pool.close()
        if self._walk_pool is not None:
            self._walk_pool.shutdown(wait=False, cancel_futures=True)
        if self.metrics is not None:
            self.metrics.close()
        await self._close_storage()
        self._stopped.set()  # a later stop() has nothing left to do

    def request_stop(self) -> None:
        """Ask `wait()` to return (from a signal handler)."""
        self._stop_requested.set()

    async def wait(self) -> None:
        """Until request_stop() is called or a background task dies (then the server must
        stop)."""
        waiters = {
            asyncio.create_task(self._stop_requested.wait()),
            asyncio.create_task(self._failed.wait()),
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()

    @property
    def failed(self) -> bool:
        return self._failed.is_set()

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, refuse submits, give running jobs `grace` seconds,
        re-queue the rest, end watch streams with UNAVAILABLE, then close."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        grace = self.config.shutdown_grace if grace is None else grace
        await self._health.enter_graceful_shutdown()
        purge = self._side_tasks.get("retention-purge")
        if purge is not None:
            purge.cancel()
        if self._queue is not None:
            self._queue.stop_accepting()
            await self._queue.drain(grace)
        if self._hub is not None:
            self._hub.close_all()
        if self._server is not None:
            await self._server.stop(grace=1.0)
        await asyncio.gather(*self._side_tasks.values(), return_exceptions=True)
        if self._probe_pool is not None:
            await self._probe_pool.close()
        if self._walk_pool is not None:
            self._walk_pool.shutdown(wait=False, cancel_futures=True)
        await self._close_storage()
        if self.metrics is not None:
            await asyncio.to_thread(self.metrics.close)
        self._stopped.set()
        log.info("stopped")

    async def _close_storage(self) -> None:
        if self._store is not None:
            await self._store.close()

    def _watch(self, task: asyncio.Task[None]) -> None:
        """A background task that ends while the server runs is fatal: say so and stop."""
        self._side_tasks[task.get_name()] = task

        def done(task: asyncio.Task[None]) -> None:
            if self._stopping:
                return
            error = None if task.cancelled() else task.exception()
            log.critical("background task %s stopped unexpectedly", task.get_name(), exc_info=error)
            self._failed.set()

        task.add_done_callback(done)

    async def _purge_loop(self) -> None:
        assert self._store is not None
        while True:
            cutoff = time.time_ns() - int(self.config.retention * 1e9)
            try:
                purged = await self._store.purge_finished(cutoff)
            except Exception:
                log.exception("purging old jobs failed; trying again later")
            else:
                if purged:
                    log.info("purged %d finished job(s) past the retention period", purged)
            await asyncio.sleep(min(PURGE_INTERVAL, self.config.retention))


def server_options(config: Config) -> list[tuple[str, int]]:
    """The gRPC server's limits: request size, streams per connection and keepalive."""
    return [
        ("grpc.so_reuseport", 0),  # a second server on the same port must fail
        ("grpc.max_receive_message_length", MAX_REQUEST_BYTES),
        ("grpc.max_concurrent_streams", config.max_concurrent_streams),
        ("grpc.keepalive_time_ms", round(config.keepalive_time * 1000)),
        ("grpc.keepalive_timeout_ms", round(config.keepalive_timeout * 1000)),
        ("grpc.keepalive_permit_without_calls", 1),
        ("grpc.http2.min_ping_interval_without_data_ms", MIN_CLIENT_PING_INTERVAL_MS),
        ("grpc.http2.max_ping_strikes", 2),
    ]


def _resolve_roots(roots: tuple[os.PathLike[str] | str, ...]) -> list[str]:
    resolved = []
    for root in roots:
        real = os.path.realpath(root)
        if not os.path.isdir(real):
            raise ConfigError(f"--allow-root {root}: not an existing folder")
        resolved.append(real)
    return resolved


async def serve(config: Config) -> int:
    """Run a server until SIGTERM or SIGINT; returns the process exit code."""
    server = MediascanServer(config)
    await server.start()
    print(f"mediascan-server listening on {server.address}", flush=True)
    grpcurl, cli = _hints(config)
    print(
        f"  try:  grpcurl {grpcurl}{server.address} list\n"
        f"        mediascan {cli}--server {server.address} scan /path/to/videos --watch\n"
        "  stop with Ctrl-C (running scans are saved and resume at the next start)",
        flush=True,
    )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, server, signum)
    try:
        await server.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
        await server.stop()
    return 1 if server.failed else 0


def _hints(config: Config) -> tuple[str, str]:
    """The grpcurl and mediascan options to show in the start-up hints (no secrets)."""
    grpcurl, cli = ["-plaintext"], []
    if config.tls:
        grpcurl, cli = ["-cacert CA.pem"], ["--tls-ca CA.pem"]
    if config.tls_client_ca is not None:
        grpcurl.append("-cert CLIENT.pem -key CLIENT.key")
        cli.append("--tls-cert CLIENT.pem --tls-key CLIENT.key")
    if config.auth_token_file is not None:
        grpcurl.append('-H "authorization: Bearer $MEDIASCAN_TOKEN"')
    return "".join(f"{o} " for o in grpcurl), "".join(f"{o} " for o in cli)


def _on_signal(server: MediascanServer, signum: int) -> None:
    log.info("%s: shutting down", signal.Signals(signum).name)
    server.request_stop()
