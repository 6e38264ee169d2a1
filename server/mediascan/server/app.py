"""Wiring and life cycle: builds the store, queue, scanner and gRPC server, starts them in order,
watches the background tasks, and shuts everything down gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Awaitable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NoReturn

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from mediascan.v1 import scan_pb2, scan_pb2_grpc

from .config import Config
from .dblock import DatabaseLocked
from .decoding import RequestDecodingInterceptor
from .engine import JobEngine
from .events import EventHub, serialize_event
from .logs import flush_limited
from .metrics import Metrics
from .probe_pool import ProbePool
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
from .store import StorageError, Store
from .streams import StreamBudget

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

# A shutdown is bounded: each step that waits on something outside the loop's control (the
# database, gRPC, the prober processes, threads) gets a time limit, and an overrun is logged and
# left behind, so that the process exits within --shutdown-grace + SHUTDOWN_MARGIN seconds.
#: What a shutdown may take beyond --shutdown-grace: re-queue, end the streams, stop gRPC, the
#: probers and the database.
SHUTDOWN_MARGIN = 2.5
#: Past grace + SHUTDOWN_MARGIN + this, a watchdog thread ends the process whatever the event
#: loop or the interpreter's exit is stuck on (a blocking call, a thread that never returns).
HARD_EXIT_SLACK = 0.3
#: After the grace, how long the interrupted jobs' re-queue commits may take before the other
#: steps start (the drain goes on meanwhile; the database is closed only after it, or at the end).
REQUEUE_TIMEOUT = 1.0
#: Calls in flight when gRPC stops get this long; then every call left is cancelled.
RPC_GRACE = 1.0
#: gRPC's stop beyond RPC_GRACE, the probers, the background tasks: each (side by side).
STEP_TIMEOUT = 0.5
#: Kept at the end for the database (its writer commits what is queued, then stops) and for
#: the metrics endpoint, however long the steps before them took.
STORE_TIMEOUT = 0.6
METRICS_TIMEOUT = 0.2


#: How often the database file is checked while the server runs (seconds): removed or replaced
#: is fatal, no answer within --db-timeout is NOT_SERVING until it answers again.
DB_CHECK_INTERVAL = 1.0


class ConfigError(Exception):
    """The configuration cannot work (e.g. an allowed root that does not exist)."""


class HealthState:
    """The one place that decides what the health service says: SERVING once started while no
    problem is set. Any part of the server reports a problem of its own by name
    (`set_problem("database", True)`) and clears it when it is gone."""

    def __init__(self, servicer: Any, services: tuple[str, ...]) -> None:
        self._servicer = servicer
        self._services = services
        self._problems: set[str] = set()
        self._started = False
        self._updates: set[asyncio.Task[None]] = set()

    @property
    def problems(self) -> frozenset[str]:
        return frozenset(self._problems)

    async def start(self) -> None:
        """The server is ready: SERVING unless a problem is set."""
        self._started = True
        await self._publish()

    def set_problem(self, name: str, present: bool) -> None:
        """Set or clear one problem (on the loop); the status follows at once."""
        before = bool(self._problems)
        if present:
            if name not in self._problems:
                log.warning("health: NOT_SERVING (%s)", name)
            self._problems.add(name)
        else:
            self._problems.discard(name)
        if self._started and before != bool(self._problems):
            task = asyncio.get_running_loop().create_task(self._publish())
            self._updates.add(task)
            task.add_done_callback(self._updates.discard)

    async def _publish(self) -> None:
        status = (
            health_pb2.HealthCheckResponse.NOT_SERVING
            if self._problems
            else health_pb2.HealthCheckResponse.SERVING
        )
        for name in self._services:
            await self._servicer.set(name, status)


class MediascanServer:
    """One mediascan server process: `await start()`, then `await stop()`."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._store: Store | None = None
        self._queue: JobEngine | None = None
        self._hub: EventHub | None = None
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        #: What the health service says (SERVING, or NOT_SERVING and why).
        self.health = HealthState(self._health, ("", SERVICE_NAME))
        self._database_lost = False
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
        self._stored_everything = False  # set by stop()
        self._overran: list[str] = []  # the shutdown steps that did not finish in time

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
    def queue(self) -> JobEngine:
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
        self._store = Store(
            config.db, listen=config.listen, timeout=config.db_timeout, on_lost=self._lost
        )
        try:
            await self._store.open()
        except DatabaseLocked as exc:
            raise ConfigError(str(exc)) from None
        self._hub = EventHub(
            self._store,
            ring_size=min(RING_SIZE, config.event_log_size),
            log_size=config.event_log_size,
            budget=StreamBudget(config.stream_buffer_budget),
        )
        self._probe_pool = pool = ProbePool(config.probe_workers, config.probe_timeout)
        pool.health_listeners.append(self._probers_changed)
        prober: Prober = pool
        if self.metrics is not None:
            prober = self.metrics.prober(pool)
            pool.spawn_failure_listeners.append(self.metrics.prober_spawn_failed)
            self.metrics.watch_probers(lambda: pool.live)
        await pool.start()
        self._probers_changed(pool.healthy)
        # One walker thread per running job, apart from the loop's default executor.
        self._walk_pool = ThreadPoolExecutor(config.workers, thread_name_prefix="walk")
        scanner = Scanner(
            self._store,
            prober,
            self._walk_pool,
            probe_concurrency=config.probe_concurrency,
            roots=tuple(roots),
        )
        self._queue = JobEngine(self._store, self._hub, scanner, config)
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
        _add_scan_service(ScanService(self._queue, self._store, config, roots), server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        enable_reflection((SERVICE_NAME, health.SERVICE_NAME), server)
        try:
            if security.credentials is not None:
                self.port = server.add_secure_port(config.listen, security.credentials)
            else:
                self.port = server.add_insecure_port(config.listen)
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {config.listen}: {exc}") from None
        self._store.lock.update(listen=self.address)
        await self._queue.start()
        self._server = server
        await server.start()
        await self.health.start()
        dispatcher = self._queue.dispatcher
        assert dispatcher is not None
        self._watch(dispatcher)
        self._watch(asyncio.create_task(self._purge_loop(), name="retention-purge"))
        self._watch(asyncio.create_task(self._check_database(), name="database-check"))

    def _probers_changed(self, healthy: bool) -> None:
        """The probe pool's health listener: NOT_SERVING while no prober process can run."""
        self.health.set_problem("no-prober", not healthy)

    async def _abandon_start(self) -> None:
        """Undo a start that failed half-way: nothing may keep running."""
        self._stopping = True
        steps = _ShutdownSteps(SHUTDOWN_MARGIN)
        if self._queue is not None and self._queue.dispatcher is not None:
            await steps.run("draining the queue", self._queue.drain(0), REQUEUE_TIMEOUT)
        if self._probe_pool is not None:
            await steps.run("closing the probers", self._probe_pool.close(), STEP_TIMEOUT)
        if self._walk_pool is not None:
            self._walk_pool.shutdown(wait=False, cancel_futures=True)
        if self.metrics is not None:
            self.metrics.close()
        if self._store is not None:
            await steps.run("closing the database", self._store.close(), STORE_TIMEOUT)
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

    @property
    def exit_code(self) -> int:
        """0 once stop() has confirmed that everything was stored; 1 if a background task died
        or the shutdown could not confirm it (the next start recovers from the database)."""
        return 0 if self._stored_everything and not self.failed else 1

    @property
    def left_work_behind(self) -> bool:
        """True if a shutdown step overran: what it left running may keep the interpreter from
        exiting."""
        return bool(self._overran)

    async def stop(self, grace: float | None = None) -> None:
        """Graceful shutdown: NOT_SERVING, refuse submits, give running jobs `grace` seconds,
        re-queue the rest, end watch streams with UNAVAILABLE, then close. Every step that waits
        on something external is bounded: the whole takes at most grace + SHUTDOWN_MARGIN
        seconds (a step that overruns is logged and left behind)."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        grace = self.config.shutdown_grace if grace is None else grace
        if self._database_lost:
            grace = 0.0  # nothing the running jobs do can be stored
        steps = _ShutdownSteps(grace + SHUTDOWN_MARGIN)
        reserve = STORE_TIMEOUT + METRICS_TIMEOUT  # always left for the database and metrics
        await self._health.enter_graceful_shutdown()
        if self._hub is not None:
            self._hub.begin_shutdown()
        for name in ("retention-purge", "database-check"):
            side = self._side_tasks.get(name)
            if side is not None:
                side.cancel()
        drain: asyncio.Task[None] | None = None
        if self._queue is not None:
            self._queue.stop_accepting()
            drain = asyncio.create_task(self._queue.drain(grace), name="shutdown-drain")
            await steps.run(
                "re-queueing the interrupted jobs", drain, grace + REQUEUE_TIMEOUT, reserve=reserve
            )
        rpcs: asyncio.Task[None] | None = None
        if self._server is not None:
            # gRPC first refuses new calls and tells the clients (GOAWAY), then lets the calls in
            # flight finish for RPC_GRACE. Its first step runs before the streams end: a client
            # that reconnects when its stream ends must reach the next server, not be accepted
            # by this one and then cancelled.
            rpcs = asyncio.create_task(self._server.stop(grace=RPC_GRACE), name="grpc-stop")
            await asyncio.sleep(0)
        if self._hub is not None:
            self._hub.close_all()
        await self._close_services(steps, reserve, rpcs)
        if drain is not None and not drain.done():
            # Its re-queue commits may still be on their way to the database: the database is
            # closed after them, or once nothing else is left to wait for.
            await asyncio.wait({drain}, timeout=steps.left(reserve))
        self._stored_everything = await self._close_storage(steps, drain)
        if self.metrics is not None:
            await steps.run(
                "closing the metrics endpoint",
                asyncio.to_thread(self.metrics.close),
                METRICS_TIMEOUT,
            )
        self._overran = steps.overran
        flush_limited()  # the counts of the log lines held back
        self._stopped.set()
        if steps.overran:
            log.warning(
                "shutdown took %.2fs; left behind: %s", steps.elapsed(), ", ".join(steps.overran)
            )
        log.info("stopped")

    async def _close_services(
        self, steps: _ShutdownSteps, reserve: float, rpcs: asyncio.Task[None] | None
    ) -> None:
        """gRPC's stop (begun), the background tasks and the probers, side by side; then the
        walk threads."""
        closing = [
            steps.run(
                "waiting for the background tasks",
                asyncio.gather(*self._side_tasks.values(), return_exceptions=True),
                STEP_TIMEOUT,
                reserve=reserve,
            )
        ]
        if rpcs is not None:
            closing.append(
                steps.run(
                    "stopping the gRPC server", rpcs, RPC_GRACE + STEP_TIMEOUT, reserve=reserve
                )
            )
        if self._probe_pool is not None:
            closing.append(
                steps.run(
                    "closing the probers", self._probe_pool.close(), STEP_TIMEOUT, reserve=reserve
                )
            )
        await asyncio.gather(*closing)
        if self._walk_pool is not None:
            self._walk_pool.shutdown(wait=False, cancel_futures=True)

    async def _close_storage(self, steps: _ShutdownSteps, drain: asyncio.Task[None] | None) -> bool:
        """Close the database once the drain is done (or out of time). True if every change
        reached it: the drain finished, no job is left RUNNING in the database (a re-queue or a
        final state whose commit failed) and the writer committed everything queued."""
        if self._store is None:
            return drain is None or drain.done()
        store = self._store
        complete = drain is None or (drain.done() and not drain.cancelled())
        if complete:
            try:
                left = await asyncio.wait_for(
                    store.list_jobs(state=scan_pb2.JOB_STATE_RUNNING, limit=100, after=None),
                    min(STORE_TIMEOUT / 2, steps.left(METRICS_TIMEOUT)),
                )
            except (TimeoutError, StorageError) as exc:
                log.error("shutdown: cannot check the jobs stored RUNNING: %s", exc or "timeout")
                complete = False
            else:
                if left:
                    log.error(
                        "shutdown: %d job(s) still RUNNING in the database (their re-queue or end "
                        "was not stored): %s; they run again at the next start",
                        len(left),
                        ", ".join(job.job_id for job in left),
                    )
                    complete = False
        elif drain is not None:
            log.error(
                "shutdown: the interrupted jobs were not all re-queued in time; those still "
                "RUNNING in the database run again at the next start"
            )
        closed = await steps.run(
            "closing the database (committing queued writes)",
            store.close(),
            STORE_TIMEOUT,
            reserve=METRICS_TIMEOUT,
        )
        if not closed:
            log.error(
                "shutdown: the database writer did not finish: the last queued writes may be "
                "lost; the next start recovers every job from what was committed"
            )
        return complete and closed

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

    def _lost(self, why: str) -> None:
        """The database file was removed or replaced (the store says so, on the loop): fatal.
        NOT_SERVING, no new work, and the server stops with a non-zero exit code."""
        if self._database_lost:
            return
        self._database_lost = True
        self.health.set_problem("database-lost", True)
        if self._queue is not None:
            self._queue.stop_accepting()
        log.critical("stopping: %s", why)
        self._failed.set()

    async def _check_database(self) -> None:
        """Check the database file every DB_CHECK_INTERVAL, also while nothing is written:
        removed or replaced is fatal (`_lost`); no answer is NOT_SERVING until it answers."""
        assert self._store is not None
        while not self._store.lost:
            reachable = await self._store.check_file()
            self.health.set_problem("database-unreachable", not reachable)
            await asyncio.sleep(DB_CHECK_INTERVAL)
        await asyncio.Event().wait()  # lost: `_lost` stops the server

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


class _ShutdownSteps:
    """The time budget of a shutdown: each step runs for at most its own limit and never past
    the overall deadline minus what later steps are guaranteed (`reserve`). A step that overruns
    is logged, recorded and left running; the shutdown goes on without it."""

    def __init__(self, budget: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._started = self._loop.time()
        self._deadline = self._started + budget
        self.overran: list[str] = []

    def left(self, reserve: float) -> float:
        """Seconds until the deadline, minus `reserve`."""
        return max(0.0, self._deadline - reserve - self._loop.time())

    def elapsed(self) -> float:
        return self._loop.time() - self._started

    async def run(
        self, step: str, work: Awaitable[Any], limit: float, *, reserve: float = 0.0
    ) -> bool:
        """Wait up to `limit` seconds for `work`; True if it finished without an error."""
        task = asyncio.ensure_future(work)
        timeout = min(limit, self.left(reserve))
        await asyncio.wait({task}, timeout=timeout)
        if not task.done():
            self.overran.append(step)
            log.warning("shutdown: %s did not finish within %.2fs; going on", step, timeout)
            return False
        error = None if task.cancelled() else task.exception()
        if error is not None:
            log.warning("shutdown: %s failed: %s", step, error)
            return False
        return True


class _Handlers:
    """Stands for the server in a generated `add_*Servicer_to_server`: keeps the method handlers
    it registers, so that one of them can be changed before the real registration."""

    def __init__(self) -> None:
        self.service = ""
        self.methods: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass  # the same methods come to add_registered_method_handlers

    def add_registered_method_handlers(
        self, service: str, methods: dict[str, grpc.RpcMethodHandler[Any, Any]]
    ) -> None:
        self.service, self.methods = service, dict(methods)


def _add_scan_service(servicer: ScanService, server: grpc.aio.Server) -> None:
    """Register ScanService as the generated code does, except WatchJob's response serializer:
    `serialize_event` sends the bytes the event hub serialized once for all of a job's watchers
    (the same bytes, so the wire is unchanged)."""
    handlers = _Handlers()
    scan_pb2_grpc.add_ScanServiceServicer_to_server(servicer, handlers)  # type: ignore[no-untyped-call]
    watch = handlers.methods["WatchJob"]
    assert watch.unary_stream is not None and handlers.service == SERVICE_NAME
    handlers.methods["WatchJob"] = grpc.unary_stream_rpc_method_handler(
        watch.unary_stream,
        request_deserializer=watch.request_deserializer,
        response_serializer=serialize_event,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(SERVICE_NAME, handlers.methods),)
    )
    server.add_registered_method_handlers(SERVICE_NAME, handlers.methods)  # type: ignore[attr-defined]


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
    """Run a server until SIGTERM or SIGINT; returns the process exit code. The process exits
    within --shutdown-grace + SHUTDOWN_MARGIN (+ HARD_EXIT_SLACK) seconds of the signal,
    whatever is stuck."""
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
        _start_watchdog(server, config.shutdown_grace + SHUTDOWN_MARGIN + HARD_EXIT_SLACK)
        await server.stop()
    if server.left_work_behind:
        # A step left a task or a thread behind: the interpreter's exit would wait for it
        # (asyncio.run joins the default executor, Python joins the thread pools).
        _exit_now(server.exit_code, "a shutdown step overran")
    return server.exit_code


def _start_watchdog(server: MediascanServer, seconds: float) -> None:
    """End the process `seconds` from now if it is still there, whatever it is stuck on (the
    event loop blocked, a thread that never returns at the interpreter's exit)."""

    def expire() -> None:
        _exit_now(server.exit_code, f"still running {seconds:.1f}s after the shutdown began")

    timer = threading.Timer(seconds, expire)
    timer.name = "shutdown-watchdog"
    timer.daemon = True  # never what keeps the process alive
    timer.start()


def _exit_now(code: int, why: str) -> NoReturn:
    """Log why, flush the log, and end the process at once with `code`."""

    def say() -> None:
        log.warning("%s: exiting now with code %d", why, code)
        for handler in logging.getLogger().handlers:
            with contextlib.suppress(Exception):
                handler.flush()
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()

    # In a thread of its own: a log handler stuck on a full pipe must not keep us alive.
    writer = threading.Thread(target=say, name="last-words", daemon=True)
    writer.start()
    writer.join(0.5)
    os._exit(code)


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
