"""Prometheus metrics: jobs, probes, watchers and every RPC, served over HTTP on
`--metrics-listen` (off by default).

Each server has its own registry, so several servers in one process (the tests) do not mix
their numbers. The job counters are fed by the queue's state-change listener, the probe metrics
by a wrapper around the prober, the gauges are read when scraped, and the RPC metrics come from a
server interceptor that sees every call, streaming ones and refused ones included.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import grpc
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import ThreadingWSGIServer, make_wsgi_app
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from mediascan.v1 import scan_pb2

from .config import split_host_port
from .grpc_types import Context, Continuation, Handler, Interceptor
from .jobs import TERMINAL, JobState
from .probe import ProbeError, Prober
from .probed import ProbeResult
from .supervisor import Supervise

log = logging.getLogger(__name__)

WATCH_METHOD = "/mediascan.v1.ScanService/WatchJob"

_RPC_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    300.0,
    1800.0,
)
_JOB_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0)
_PROBE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 30.0)


#: The name of the endpoint's thread (and of its supervision).
METRICS_THREAD = "metrics-http"
#: How often the endpoint's thread checks for a stop: what close() may wait.
HTTP_POLL_INTERVAL = 0.05

#: `Supervisor.supervised`: wraps a thread's target so that its end is reported.


class _QuietHandler(WSGIRequestHandler):
    """No access log line per scrape."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class Metrics:
    """The metrics of one server process, in a registry of their own."""

    def __init__(self) -> None:
        # No `_created` series: they would double the output and tell nothing useful here.
        disable_created_metrics()  # type: ignore[no-untyped-call]
        self.registry = registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
        GCCollector(registry=registry)
        self._add_job_metrics(registry)
        self._add_probe_metrics(registry)
        self._add_rpc_metrics(registry)
        self._http: WSGIServer | None = None

    def _add_job_metrics(self, registry: CollectorRegistry) -> None:
        self.jobs_submitted = Counter(
            "mediascan_jobs_submitted", "Scan jobs created by SubmitScan.", registry=registry
        )
        self.jobs_finished = Counter(
            "mediascan_jobs_finished",
            "Scan jobs that reached a final state, by that state.",
            ["state"],
            registry=registry,
        )
        self.jobs_requeued = Counter(
            "mediascan_jobs_requeued",
            "Running jobs put back in the queue (shutdown or crash): they run again.",
            registry=registry,
        )
        self.jobs_queued = Gauge(
            "mediascan_jobs_queued", "Jobs waiting for a worker.", registry=registry
        )
        self.jobs_running = Gauge(
            "mediascan_jobs_running", "Jobs a worker is running.", registry=registry
        )
        self.job_duration = Histogram(
            "mediascan_job_duration_seconds",
            "Run time of finished jobs (start to end), by final state.",
            ["state"],
            buckets=_JOB_BUCKETS,
            registry=registry,
        )

    def _add_probe_metrics(self, registry: CollectorRegistry) -> None:
        self.files_probed = Counter(
            "mediascan_files_probed",
            "Files handed to a prober (a success or a probe error).",
            registry=registry,
        )
        self.probe_errors = Counter(
            "mediascan_probe_errors",
            "Probes that found no usable video, by reason (corrupt, not_video, timeout, ...).",
            ["reason"],
            registry=registry,
        )
        self.probe_duration = Histogram(
            "mediascan_probe_duration_seconds",
            "Time from handing a file to the probers to the answer (waiting for a free "
            "prober included).",
            buckets=_PROBE_BUCKETS,
            registry=registry,
        )
        self.prober_spawn_failures = Counter(
            "mediascan_prober_spawn_failures",
            "Attempts to start a prober process that failed (e.g. out of descriptors); each is "
            "retried with a growing delay.",
            registry=registry,
        )
        self.probers_live = Gauge(
            "mediascan_probers_live", "Prober processes running now.", registry=registry
        )

    def _add_rpc_metrics(self, registry: CollectorRegistry) -> None:
        self.watchers = Gauge(
            "mediascan_watchers_active", "Open WatchJob streams.", registry=registry
        )
        labels = ["grpc_service", "grpc_method", "grpc_type", "grpc_code"]
        self.rpc_handled = Counter(
            "grpc_server_handled",
            "RPCs completed on the server, by method and status code.",
            labels,
            registry=registry,
        )
        self.rpc_duration = Histogram(
            "grpc_server_handling_seconds",
            "Time from the start of an RPC to its status, by method and status code (for a "
            "stream: its whole life).",
            labels,
            buckets=_RPC_BUCKETS,
            registry=registry,
        )

    # -- sources --------------------------------------------------------------------------------

    def watch_queue(self, queued: Callable[[], int], running: Callable[[], int]) -> None:
        """Read the queue depth and the jobs running here from these when scraped."""
        self.jobs_queued.set_function(lambda: float(queued()))
        self.jobs_running.set_function(lambda: float(running()))

    def watch_probers(self, live: Callable[[], int]) -> None:
        """Read the number of running prober processes from this when scraped."""
        self.probers_live.set_function(lambda: float(live()))

    def prober_spawn_failed(self, error: OSError) -> None:
        """The probe pool's listener for a prober process that could not be started."""
        self.prober_spawn_failures.inc()

    def job_changed(self, previous: int, job: scan_pb2.Job) -> None:
        """The queue's state-change listener: count submits, requeues and final states."""
        state = JobState(job.state)
        if state is JobState.QUEUED and previous == 0:
            self.jobs_submitted.inc()
        elif state is JobState.QUEUED:
            self.jobs_requeued.inc()
        elif state in TERMINAL:
            self.jobs_finished.labels(state.name).inc()
            if job.HasField("start_time") and job.HasField("end_time"):
                ran = job.end_time.ToNanoseconds() - job.start_time.ToNanoseconds()
                self.job_duration.labels(state.name).observe(max(0.0, ran / 1e9))

    def prober(self, prober: Prober) -> MeteredProber:
        return MeteredProber(prober, self)

    def interceptor(self) -> RpcMetricsInterceptor:
        return RpcMetricsInterceptor(self)

    # -- the HTTP endpoint ------------------------------------------------------------------------

    def serve(self, address: str, supervised: Supervise | None = None) -> tuple[str, int]:
        """Start the /metrics HTTP endpoint in a thread (run under `supervised(name, target)`
        when given: its end while serving is a death); returns the host and bound port.
        Raises OSError when the address cannot be bound."""
        host, port = split_host_port(address)
        server = make_server(
            host or "0.0.0.0",
            port,
            make_wsgi_app(self.registry),
            ThreadingWSGIServer,
            handler_class=_QuietHandler,
        )
        self._http = server

        def serve() -> None:
            server.serve_forever(poll_interval=HTTP_POLL_INTERVAL)
            if self._http is server:  # stopped by anything but close()
                raise RuntimeError("the metrics endpoint stopped serving")

        target = supervised(METRICS_THREAD, serve) if supervised is not None else serve
        threading.Thread(target=target, name=METRICS_THREAD, daemon=True).start()
        return host, server.server_port

    def close(self) -> None:
        """Stop the endpoint: within HTTP_POLL_INTERVAL, then the socket is closed."""
        server, self._http = self._http, None
        if server is not None:
            server.shutdown()
            server.server_close()


class MeteredProber:
    """A prober that counts and times the probes of the one it wraps."""

    def __init__(self, prober: Prober, metrics: Metrics) -> None:
        self._prober = prober
        self._metrics = metrics

    async def probe(self, fd: int, path: str) -> ProbeResult:
        started = time.perf_counter()
        try:
            result = await self._prober.probe(fd, path)
        except ProbeError as exc:
            self._record(started)
            self._metrics.probe_errors.labels(exc.reason).inc()
            raise
        self._record(started)
        return result

    def _record(self, started: float) -> None:
        self._metrics.files_probed.inc()
        self._metrics.probe_duration.observe(time.perf_counter() - started)


# -- RPC metrics ------------------------------------------------------------------------------


def _outcome(context: Context, error: BaseException | None) -> str:
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code.name
    if error is None:
        return "OK"
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"  # the client went away (or the server is stopping)
    return "UNKNOWN"


def _known_methods() -> frozenset[str]:
    """`/package.Service/Method` of every method this server implements."""
    from grpc_health.v1 import health_pb2
    from grpc_reflection.v1alpha import reflection_pb2

    services = (
        scan_pb2.DESCRIPTOR.services_by_name["ScanService"],
        health_pb2.DESCRIPTOR.services_by_name["Health"],
        reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
    )
    return frozenset(f"/{s.full_name}/{m.name}" for s in services for m in s.methods)


#: Methods labelled by name; any other name is counted as service and method "unknown", so that
#: callers cannot create unbounded label values.
_KNOWN_METHODS = _known_methods()


class RpcMetricsInterceptor(Interceptor):
    """Counts and times every RPC by service, method, type and final status code."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None:
            # UNIMPLEMENTED: not counted (unknown method names would make unbounded labels).
            return handler
        full = handler_call_details.method
        if full in _KNOWN_METHODS:
            service, _, method = full.lstrip("/").rpartition("/")
        else:  # e.g. an unauthenticated call to a made-up name: one series for all of them
            service, method = "unknown", "unknown"
        record = functools.partial(self._record, service, method, full == WATCH_METHOD)
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _timed(handler.unary_unary, functools.partial(record, "unary")),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _timed(handler.unary_stream, functools.partial(record, "server_stream")),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _timed(handler.stream_unary, functools.partial(record, "client_stream")),
                handler.request_deserializer,
                handler.response_serializer,
            )
        if handler.stream_stream:
            return grpc.stream_stream_rpc_method_handler(
                _timed(handler.stream_stream, functools.partial(record, "bidi_stream")),
                handler.request_deserializer,
                handler.response_serializer,
            )
        return handler

    def _record(
        self,
        service: str,
        method: str,
        watch: bool,
        kind: str,
        started: float | None,
        code: str | None,
    ) -> None:
        """Called with code None when the call starts, then with its code when it ends."""
        if code is None:
            if watch:
                self._metrics.watchers.inc()
            return
        if watch:
            self._metrics.watchers.dec()
        labels = (service, method, kind, code)
        self._metrics.rpc_handled.labels(*labels).inc()
        assert started is not None
        self._metrics.rpc_duration.labels(*labels).observe(time.perf_counter() - started)


_Record = Callable[[float | None, str | None], None]


def _timed(behavior: Callable[..., Any], record: _Record) -> Callable[..., Any]:
    """Wrap a handler behavior (coroutine or async generator, as the original) with `record`."""
    if inspect.isasyncgenfunction(behavior):

        async def stream(request: Any, context: Context) -> AsyncIterator[Any]:
            started = time.perf_counter()
            record(started, None)
            error: BaseException | None = None
            try:
                async for response in behavior(request, context):
                    yield response
            except BaseException as exc:
                error = exc
                raise
            finally:
                record(started, _outcome(context, error))

        return stream

    async def call(request: Any, context: Context) -> Any:
        started = time.perf_counter()
        record(started, None)
        error: BaseException | None = None
        try:
            return await behavior(request, context)
        except BaseException as exc:
            error = exc
            raise
        finally:
            record(started, _outcome(context, error))

    return call
