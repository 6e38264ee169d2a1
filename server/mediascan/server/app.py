"""Wiring and life cycle: builds the store, queue, scanner and gRPC server, starts them in order,
watches the background tasks, and shuts everything down gracefully."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from mediascan.v1 import scan_pb2, scan_pb2_grpc

from .batch_worker import BatchWorker
from .config import Config
from .dblock import DatabaseLocked
from .decoding import RequestDecodingInterceptor
from .engine import JobEngine
from .events import EventHub, serialize_event
from .follow import Followers
from .health import HealthState
from .libraries.keeper import LibraryJobs
from .libraries.keepers import LIBRARY_KEEPERS, LibraryKeepers
from .logs import flush_limited
from .maintenance import start_maintenance
from .metrics import Metrics
from .probe import Prober
from .probe_pool import ProbePool
from .reflection import enable_reflection
from .roots import AllowedRoots, RootError, resolve_roots
from .scanner import Scanner
from .security import (
    Security,
    SecurityError,
    TokenAuthInterceptor,
    check_exposure,
    load_security,
)
from .service import ScanService
from .shutdown import ShutdownSteps, close_storage, exit_now, start_watchdog
from .store import StorageError
from .store.changes import LibraryCatalog
from .store.factory import ServerStore, open_store
from .streams import StreamBudget
from .supervisor import Supervisor
from .verify import Verifier

log = logging.getLogger(__name__)

SERVICE_NAME = scan_pb2.DESCRIPTOR.services_by_name["ScanService"].full_name
#: Events per job kept in memory for live watchers (older ones are read from the store).
RING_SIZE = 1024
#: The supervised task of this server's share of every scan's probing (a shared store).
BATCH_WORKER = "batch-worker"
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


class ConfigError(Exception):
    """The configuration cannot work (e.g. an allowed root that does not exist)."""


class MediascanServer:
    """One mediascan server process: `await start()`, then `await stop()`."""

    def __init__(self, config: Config, *, prober_command: Sequence[str] | None = None) -> None:
        """`prober_command`: the prober process to run (default `python -m
        mediascan.server.probe`); tests pass one that wraps it."""
        self.config = config
        self._prober_command = prober_command
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._store: ServerStore | None = None
        self._queue: JobEngine | None = None
        self._hub: EventHub | None = None
        self._health = health.aio.HealthServicer()  # type: ignore[attr-defined]
        #: What the health service says (SERVING, or NOT_SERVING and why).
        self.health = HealthState(self._health, ("", SERVICE_NAME))
        self._database_lost = False
        self._probe_pool: ProbePool | None = None
        #: DECODE verifications and whole-file hashes, in probers of their own (`verify.py`).
        self._verifier: Verifier | None = None
        self._walk_pool: ThreadPoolExecutor | None = None
        #: Watches the background tasks and threads (made by start(), on the loop).
        self.supervisor: Supervisor | None = None
        self._service: ScanService | None = None
        self._failed = asyncio.Event()
        self._stop_requested = asyncio.Event()
        self._stopping = False
        self._stopped = asyncio.Event()
        self._security: Security | None = None
        self.metrics: Metrics | None = None
        self.metrics_port = 0
        self._stored_everything = False  # set by stop()
        self._overran: list[str] = []  # the shutdown steps that did not finish in time
        #: The store's own background tasks: they end when the store closes, at the very end.
        self._store_tasks: list[asyncio.Task[None]] = []

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
        try:
            roots = await asyncio.to_thread(resolve_roots, config.allow_roots)
        except RootError as exc:
            raise ConfigError(str(exc)) from None
        self.supervisor = Supervisor(self.health, self._fatal)
        try:
            await self._assemble(config, security, roots)
        except BaseException:
            await self._abandon_start()  # nothing half-started may keep running
            raise
        where = self._store.where if self._store is not None else config.db
        log.info("serving on %s %s", self.address, _described(config, where, security))
        if self.metrics is not None:
            log.info("metrics on http://%s/metrics", self.metrics_address)

    async def _assemble(self, config: Config, security: Security, roots: AllowedRoots) -> None:
        """Metrics, store, probers, queue, then the gRPC server (see `_serve`)."""
        if config.metrics_listen:
            assert self.supervisor is not None
            self.metrics, self.metrics_port = _start_metrics(config.metrics_listen, self.supervisor)
        interceptors = _interceptors(self.metrics, security)
        try:
            self._store = await open_store(
                config,
                on_lost=self._lost,
                supervise=self.supervisor.supervised,  # type: ignore[union-attr]
                roots=roots.paths,
            )
        except DatabaseLocked as exc:
            raise ConfigError(str(exc)) from None
        except StorageError as exc:
            raise ConfigError(f"cannot open the database: {exc}") from None
        ring_size = min(RING_SIZE, config.event_log_size)
        feed = self._store.feed
        self._hub = EventHub(
            self._store,
            ring_size=ring_size,
            log_size=config.event_log_size,
            budget=StreamBudget(config.stream_buffer_budget),
            followers=None if feed is None else Followers(self._store, feed, ring_size=ring_size),
        )
        self._probe_pool = pool = _probe_pool(config, self._prober_command, self.metrics)
        # NOT_SERVING while no prober process can run.
        pool.health_listeners.append(lambda ok: self.health.set_problem("no-prober", not ok))
        await pool.start()
        for task in pool.tasks:
            self.supervisor.watch_task(task)  # type: ignore[union-attr]
        self.health.set_problem("no-prober", not pool.healthy)
        self._verifier = await _start_verifier(config, self._prober_command, self.supervisor)
        # One walker thread per running job, apart from the loop's default executor.
        self._walk_pool = ThreadPoolExecutor(max(1, config.workers), thread_name_prefix="walk")
        supervisor = self.supervisor
        assert supervisor is not None
        scanner = _scanner(
            self._store, pool, self._walk_pool, self._verifier, self.metrics, config, roots
        )
        _start_batch_worker(self._store, scanner.prober, roots, config, supervisor)
        self._queue = JobEngine(
            self._store,
            self._hub,
            scanner,
            config,
            watch_task=lambda task: supervisor.watch_task(task, may_end=True),
            feed=feed,
        )
        if self.metrics is not None:
            _watch_jobs(self.metrics, self._queue, self._store)
        await self._serve(config, security, interceptors, roots)

    async def _serve(
        self,
        config: Config,
        security: Security,
        interceptors: list[grpc.aio.ServerInterceptor[Any, Any]],
        roots: AllowedRoots,
    ) -> None:
        """Bind the port (so that a taken port fails before any job runs), recover and start
        the jobs, then serve."""
        assert self._queue is not None and self._store is not None
        server = grpc.aio.server(interceptors=interceptors, options=server_options(config))
        self._service = ScanService(
            self._queue, self._store, config, roots.paths, verifier=self._verifier
        )
        _add_scan_service(self._service, server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        enable_reflection((SERVICE_NAME, health.SERVICE_NAME), server)
        self.port = _bind(server, config.listen, security)
        self._store.serving_on(self.address)
        assert self.supervisor is not None
        # The LISTEN connection (PostgreSQL), before recovery: nothing queued meanwhile is missed.
        self._store_tasks = self._store.start_tasks()
        for task in self._store_tasks:
            self.supervisor.watch_task(task)
        await self._queue.start()
        self._server = server
        await server.start()
        await self.health.start()
        dispatcher = self._queue.dispatcher
        assert dispatcher is not None and self.supervisor is not None
        self.supervisor.watch_task(dispatcher)
        keepers = _start_keepers(self._service, self._queue, self._store, config, roots)
        if keepers is not None:
            self.supervisor.watch_task(keepers)
        for task in start_maintenance(
            self._store, self.health, config.retention, lambda: self._stopping
        ):
            self.supervisor.watch_task(task)

    async def _abandon_start(self) -> None:
        """Undo a start that failed half-way: nothing may keep running."""
        self._stopping = True
        if self.supervisor is not None:
            self.supervisor.stop()
        steps = ShutdownSteps(SHUTDOWN_MARGIN)
        if self._queue is not None and self._queue.dispatcher is not None:
            await steps.run("draining the queue", self._queue.drain(0), REQUEUE_TIMEOUT)
        for pool in _pools(self._probe_pool, self._verifier):
            await steps.run("closing the probers", pool.close(), STEP_TIMEOUT)
        if self._service is not None:
            self._service.close()
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
        waiters = {asyncio.create_task(e.wait()) for e in (self._stop_requested, self._failed)}
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
        if self.supervisor is not None:
            self.supervisor.stop()
        grace = self.config.shutdown_grace if grace is None else grace
        if self._database_lost:
            grace = 0.0  # nothing the running jobs do can be stored
        steps = ShutdownSteps(grace + SHUTDOWN_MARGIN)
        reserve = STORE_TIMEOUT + METRICS_TIMEOUT  # always left for the database and metrics
        drain, rpcs = await self._refuse_and_drain(steps, grace, reserve)
        if self._hub is not None:
            self._hub.close_all()
        await self._close_services(steps, reserve, rpcs)
        if drain is not None and not drain.done():
            # Its re-queue commits may still be on their way to the database: the database is
            # closed after them, or once nothing else is left to wait for.
            await asyncio.wait({drain}, timeout=steps.left(reserve))
        self._stored_everything = await close_storage(
            self._store, steps, drain, store_timeout=STORE_TIMEOUT, reserve=METRICS_TIMEOUT
        )
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

    async def _refuse_and_drain(
        self, steps: ShutdownSteps, grace: float, reserve: float
    ) -> tuple[asyncio.Task[None] | None, asyncio.Task[None] | None]:
        """NOT_SERVING, no new submits or watchers, the side tasks cancelled; the running jobs
        get `grace` (then are re-queued); gRPC's stop begins. Returns the drain and the stop."""
        await self._health.enter_graceful_shutdown()
        if self._hub is not None:
            self._hub.begin_shutdown()
        tasks = self.supervisor.tasks if self.supervisor is not None else {}
        for name in ("retention-purge", "database-check", LIBRARY_KEEPERS):
            side = tasks.get(name)
            if side is not None:
                side.cancel()
        drain: asyncio.Task[None] | None = None
        if self._queue is not None:
            self._queue.stop_accepting()
            drain = asyncio.create_task(self._queue.drain(grace), name="shutdown-drain")
            await steps.run(
                "re-queueing the interrupted jobs", drain, grace + REQUEUE_TIMEOUT, reserve=reserve
            )
        if (batches := tasks.get(BATCH_WORKER)) is not None:
            batches.cancel()  # after the drain: it probes for this server's jobs too
        rpcs: asyncio.Task[None] | None = None
        if self._server is not None:
            # gRPC first refuses new calls and tells the clients (GOAWAY), then lets the calls in
            # flight finish for RPC_GRACE. Its first step runs before the streams end: a client
            # that reconnects when its stream ends must reach the next server, not be accepted
            # by this one and then cancelled.
            rpcs = asyncio.create_task(self._server.stop(grace=RPC_GRACE), name="grpc-stop")
            await asyncio.sleep(0)
        if self._service is not None:
            self._service.end_streams()  # WatchLibrary streams end with UNAVAILABLE
        return drain, rpcs

    async def _close_services(
        self, steps: ShutdownSteps, reserve: float, rpcs: asyncio.Task[None] | None
    ) -> None:
        """gRPC's stop (begun), the background tasks and the probers, side by side; then the
        walk threads."""
        closing = [
            steps.run(
                "waiting for the background tasks",
                asyncio.gather(
                    *_side_tasks(
                        self.supervisor, _pools(self._probe_pool, self._verifier), self._store_tasks
                    ),
                    return_exceptions=True,
                ),
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
        closing.extend(
            steps.run("closing the probers", pool.close(), STEP_TIMEOUT, reserve=reserve)
            for pool in _pools(self._probe_pool, self._verifier)
        )
        await asyncio.gather(*closing)
        if self._service is not None:
            self._service.close()  # its path lane's thread ends once its calls are done
        if self._walk_pool is not None:
            self._walk_pool.shutdown(wait=False, cancel_futures=True)

    def _fatal(self, why: str) -> None:
        """A background task or thread died (the supervisor says so, on the loop): stop with a
        non-zero exit code."""
        if self._queue is not None:
            self._queue.stop_accepting()
        self._failed.set()

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


def _described(config: Config, where: object, security: Security) -> str:
    """The rest of the "serving on" line: node, database, workers, transport and auth."""
    transport = "mutual TLS" if security.mutual_tls else "TLS" if config.tls else "plaintext"
    auth = "token auth" if security.tokens else "no token auth"
    return (
        f"as node {config.effective_node_name} (db {where}, {config.workers} workers, "
        f"{transport}, {auth})"
    )


def _start_batch_worker(
    store: ServerStore, prober: Prober, roots: AllowedRoots, config: Config, supervisor: Supervisor
) -> None:
    """On a shared store, this server's share of every scan's probing (`BATCH_WORKER`), unless
    it runs no jobs (`--workers 0`: an API-only server probes nothing either)."""
    queue = store.probe_queue
    if queue is None or config.workers == 0:
        return
    worker = BatchWorker(queue, prober, roots, slots=config.probe_concurrency)
    supervisor.watch_task(asyncio.create_task(worker.run(), name=BATCH_WORKER))


def _watch_jobs(metrics: Metrics, queue: JobEngine, store: ServerStore) -> None:
    """The job metrics: state changes as they are committed, and the queue's depth (a shared
    database's is every server's, as counted by its last check)."""
    queue.state_listeners.append(metrics.job_changed)
    metrics.watch_queue(
        lambda: queue.queued_count if store.queued is None else store.queued,
        lambda: queue.running_count,
    )


def _start_metrics(address: str, supervisor: Supervisor) -> tuple[Metrics, int]:
    """The /metrics endpoint and its port, its thread supervised."""
    metrics = Metrics()
    try:
        _, port = metrics.serve(address, supervisor.supervised)
    except OSError as exc:
        raise ConfigError(f"--metrics-listen {address}: cannot listen: {exc.strerror}") from None
    return metrics, port


def _interceptors(
    metrics: Metrics | None, security: Security
) -> list[grpc.aio.ServerInterceptor[Any, Any]]:
    """The server's interceptors, outermost first: metrics (which sees refusals too), the
    token check, then the decoding of requests."""
    interceptors: list[grpc.aio.ServerInterceptor[Any, Any]] = []
    if metrics is not None:
        interceptors.append(metrics.interceptor())
    if security.tokens:
        interceptors.append(TokenAuthInterceptor(security.tokens))
    interceptors.append(RequestDecodingInterceptor())
    return interceptors


def _bind(server: grpc.aio.Server, listen: str, security: Security) -> int:
    """Bind `listen` (TLS when configured); the port bound. ConfigError if it cannot."""
    try:
        if security.credentials is not None:
            return server.add_secure_port(listen, security.credentials)
        return server.add_insecure_port(listen)
    except RuntimeError as exc:
        raise ConfigError(f"cannot listen on {listen}: {exc}") from None


def _pools(probes: ProbePool | None, verifier: Verifier | None) -> list[ProbePool]:
    """The prober pools started: the probes', then the verifications'."""
    pools = [probes, verifier.pool if verifier is not None else None]
    return [pool for pool in pools if pool is not None]


def _side_tasks(
    supervisor: Supervisor | None,
    pools: list[ProbePool],
    store_tasks: list[asyncio.Task[None]],
) -> list[asyncio.Task[Any]]:
    """The background tasks to wait for at shutdown: the supervised ones, but the probers'
    (they close on their own) and the store's."""
    if supervisor is None or not pools:
        return []
    own = {task for pool in pools for task in pool.tasks} | {*store_tasks}
    return [task for task in supervisor.tasks.values() if task not in own]


def _scanner(
    store: ServerStore,
    pool: ProbePool,
    walk_pool: ThreadPoolExecutor,
    verifier: Verifier,
    metrics: Metrics | None,
    config: Config,
    roots: AllowedRoots,
) -> Scanner:
    """The scanner of every job: the probers (counted by the metrics if they are on), the walk
    threads, the verification probers, and on a shared store the batches of every server."""
    return Scanner(
        store,
        metrics.prober(pool) if metrics is not None else pool,
        walk_pool,
        probe_concurrency=config.probe_concurrency,
        roots=roots,
        suffixes=config.video_suffixes,
        queue=store.probe_queue,
        verifier=verifier,
        fingerprinter=functools.partial(pool.run, op="fingerprint", parse=str),
        find_walk_min=config.find_walk_min,
    )


async def _start_verifier(
    config: Config, command: Sequence[str] | None, supervisor: Supervisor | None
) -> Verifier:
    """The verification probers (`verify.py`): a pool of their own, started with the first
    verification, one file at a time per worker, and a worker killed when the scan that asked
    gives up on its file."""
    pool = ProbePool(
        config.verify_workers,
        config.probe_timeout,
        command=command,
        batch=1,
        kill_on_cancel=True,
        on_demand=True,
    )
    await pool.start()
    assert supervisor is not None
    for task in pool.tasks:
        supervisor.watch_task(task)
    return Verifier(pool, base=config.probe_timeout, ratio=config.verify_time_ratio)


def _probe_pool(
    config: Config, command: Sequence[str] | None, metrics: Metrics | None
) -> ProbePool:
    """The prober processes, counted by the metrics if they are on."""
    pool = ProbePool(config.probe_workers, config.probe_timeout, command=command)
    if metrics is not None:
        pool.spawn_failure_listeners.append(metrics.prober_spawn_failed)
        metrics.watch_probers(lambda: pool.live)
    return pool


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


async def serve(
    config: Config,
    *,
    prober_command: Sequence[str] | None = None,
    on_started: Callable[[MediascanServer], object] | None = None,
) -> int:
    """Run a server until SIGTERM or SIGINT, or until a supervised part dies; returns the process
    exit code. The process exits within --shutdown-grace + SHUTDOWN_MARGIN (+ HARD_EXIT_SLACK)
    seconds of the signal, whatever is stuck. `prober_command` and `on_started` (called with the
    running server) are for tests."""
    server = MediascanServer(config, prober_command=prober_command)
    await server.start()
    if on_started is not None:  # tests: a collaborator that acts on the running server
        on_started(server)
    # Before the listening line: a signal sent as soon as it is read stops the server gracefully.
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, _on_signal, server, signum)
    print(f"mediascan-server listening on {server.address}", flush=True)
    grpcurl, cli = _hints(config)
    print(
        f"  try:  grpcurl {grpcurl}{server.address} list\n"
        f"        mediascan {cli}--server {server.address} scan /path/to/videos --watch\n"
        "  stop with Ctrl-C (running scans are saved and resume at the next start)",
        flush=True,
    )
    try:
        await server.wait()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(Exception):
                loop.remove_signal_handler(signum)
        start_watchdog(
            lambda: server.exit_code, config.shutdown_grace + SHUTDOWN_MARGIN + HARD_EXIT_SLACK
        )
        await server.stop()
    if server.left_work_behind:
        # A step left a task or a thread behind: the interpreter's exit would wait for it
        # (asyncio.run joins the default executor, Python joins the thread pools).
        exit_now(server.exit_code, "a shutdown step overran")
    return server.exit_code


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


def _start_keepers(
    service: ScanService,
    queue: JobEngine,
    store: Any,
    config: Config,
    roots: AllowedRoots,
) -> asyncio.Task[None] | None:
    """The keepers of this server's libraries (watching, polling, schedules), on a store that
    keeps libraries; their jobs' ends are recorded in the libraries' status."""
    shared = store.feed is not None  # other servers use the database
    if service.libraries is None or not isinstance(store, LibraryCatalog):
        return None
    keepers = LibraryKeepers(
        store,
        LibraryJobs(queue, config.effective_default_timeout, config.video_suffixes),
        node=config.effective_node_name,
        roots=roots.paths,
        lease=config.lease,
        shared=shared,
    )
    service.libraries.observe(keepers.library_changed)
    queue.state_listeners.append(keepers.job_changed)
    return asyncio.create_task(keepers.run(), name=LIBRARY_KEEPERS)
