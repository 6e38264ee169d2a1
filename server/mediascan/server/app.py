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

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mediascan.v1 import scan_pb2, scan_pb2_grpc

from .config import Config
from .events import EventHub
from .probe_pool import ProbePool
from .queue import LocalJobQueue
from .scanner import Scanner
from .service import ScanService
from .store import Store

log = logging.getLogger(__name__)

SERVICE_NAME = scan_pb2.DESCRIPTOR.services_by_name["ScanService"].full_name
#: Events per job kept in memory for live watchers (older ones are read from the store).
RING_SIZE = 1024
#: How often finished jobs past their retention are purged (seconds).
PURGE_INTERVAL = 3600.0


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

    @property
    def address(self) -> str:
        host = self.config.listen.rsplit(":", 1)[0]
        return f"{host}:{self.port}"

    @property
    def queue(self) -> LocalJobQueue:
        assert self._queue is not None, "start() the server first"
        return self._queue

    async def start(self) -> None:
        """Open the database, re-queue unfinished jobs, bind, and report SERVING."""
        config = self.config
        roots = await asyncio.to_thread(_resolve_roots, config.allow_roots)
        self._store = Store(config.db)
        await self._store.open()
        self._hub = EventHub(self._store, ring_size=min(RING_SIZE, config.event_log_size))
        self._probe_pool = ProbePool(config.probe_workers, config.probe_timeout)
        await self._probe_pool.start()
        # One walker thread per running job, apart from the loop's default executor.
        self._walk_pool = ThreadPoolExecutor(config.workers, thread_name_prefix="walk")
        scanner = Scanner(
            self._store,
            self._probe_pool,
            self._walk_pool,
            probe_concurrency=config.probe_concurrency,
        )
        self._queue = LocalJobQueue(self._store, self._hub, scanner, config)
        await self._queue.start()

        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),  # a second server on the same port must fail
                ("grpc.max_receive_message_length", 1024 * 1024),
            ]
        )
        scan_pb2_grpc.add_ScanServiceServicer_to_server(  # type: ignore[no-untyped-call]
            ScanService(self._queue, self._store, config, roots), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        try:
            self.port = server.add_insecure_port(config.listen)
        except RuntimeError as exc:
            await self._close_storage()
            raise ConfigError(f"cannot listen on {config.listen}: {exc}") from None
        self._server = server
        await server.start()
        for name in ("", SERVICE_NAME):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        dispatcher = self._queue.dispatcher
        assert dispatcher is not None
        self._watch(dispatcher)
        self._watch(asyncio.create_task(self._purge_loop(), name="retention-purge"))
        log.info("serving on %s (db %s, %d workers)", self.address, config.db, config.workers)

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
    print(
        f"  try:  grpcurl -plaintext {server.address} list\n"
        f"        mediascan --server {server.address} scan /path/to/videos --watch\n"
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


def _on_signal(server: MediascanServer, signum: int) -> None:
    log.info("%s: shutting down", signal.Signals(signum).name)
    server.request_stop()
