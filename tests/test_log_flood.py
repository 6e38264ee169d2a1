"""Log flooding (issue 11.9): calls that anyone can make fail (no token) must not write a log
line each. A real `mediascan-server` with a token file takes thousands of refused calls over real
gRPC: its log holds at most LOG_BURST refusal lines a LOG_WINDOW plus one line a window counting
the rest, the counts add up to every call, and the Prometheus counter stays exact."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from pathlib import Path

import grpc
import pytest
from _robust import (
    Launcher,
    launch_fixture,  # noqa: F401 - provides the `launch` fixture
    metric_total,
    record_figures,
)

from mediascan.server.logs import LOG_BURST, LOG_WINDOW, LineLimiter
from mediascan.v1 import scan_pb2, scan_pb2_grpc

CALLS = 3000
BATCH = 100
REFUSED = re.compile(r"refused a call to \S+ from \S+: UNAUTHENTICATED")
SUPPRESSED = re.compile(r"suppressed (\d+) similar lines \(refused calls\)")
METRICS = re.compile(r"metrics on http://(\S+)/metrics")


async def refused(channel: grpc.aio.Channel, n: int) -> None:
    stub = scan_pb2_grpc.ScanServiceStub(channel)
    try:
        if n % 3 == 0:
            await stub.GetJob(scan_pb2.GetJobRequest(job_id="j_x"), timeout=30)
        elif n % 3 == 1:
            async for _ in stub.WatchJob(scan_pb2.WatchJobRequest(job_id="j_x"), timeout=30):
                pass
        else:  # a method that does not exist: refused all the same
            call = channel.unary_unary(f"/mediascan.v1.ScanService/Nope{n}")
            await call(b"", timeout=30)
    except grpc.aio.AioRpcError as error:
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, error
    else:
        raise AssertionError("an unauthenticated call was answered")


def unauthenticated_total(address: str) -> float:
    return metric_total(address, "grpc_server_handled_total", grpc_code="UNAUTHENTICATED")


@pytest.mark.slow
async def test_refused_calls_do_not_flood_the_log(launch: Launcher, tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text("a-token-nobody-sends-0123456789\n")
    tokens.chmod(0o600)
    server = await launch("--auth-token-file", str(tokens), "--metrics-listen", "127.0.0.1:0")
    found = METRICS.search(server.stderr_text())
    assert found, server.tail()
    started = time.monotonic()
    async with grpc.aio.insecure_channel(server.address) as channel:
        for start in range(0, CALLS, BATCH):
            await asyncio.gather(*(refused(channel, n) for n in range(start, start + BATCH)))
    assert await asyncio.to_thread(unauthenticated_total, found[1]) == CALLS  # exact
    server.terminate()
    assert await server.wait(60) == 0
    elapsed = time.monotonic() - started
    log = server.stderr_text()
    written = len(REFUSED.findall(log))
    counted = [int(n) for n in SUPPRESSED.findall(log)]
    windows = int(elapsed // LOG_WINDOW) + 1
    record_figures(
        "log_flood", calls=CALLS, refusal_lines=written, summary_lines=len(counted), s=elapsed
    )
    assert written + sum(counted) == CALLS, (written, counted)
    assert written <= LOG_BURST * windows
    assert len(counted) <= windows
    assert len(log.splitlines()) < 20 + 2 * LOG_BURST * windows


def test_limiter_counts_what_it_holds_back(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("mediascan.test.limiter")
    limiter = LineLimiter(logger, "tries", burst=3, window=3600)
    with caplog.at_level(logging.INFO, logger=logger.name):
        for n in range(100):
            limiter.log(logging.INFO, "try %d", n)
        limiter.flush()
        limiter.flush()  # nothing more to say
    lines = [record.getMessage() for record in caplog.records]
    assert lines == ["try 0", "try 1", "try 2", lines[3]]
    assert lines[3].startswith("suppressed 97 similar lines (tries) in the last ")
    assert caplog.records[3].levelno == logging.WARNING


async def test_limiter_summary_comes_when_the_window_ends(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """On an event loop the count is written when the window ends, with no later line."""
    logger = logging.getLogger("mediascan.test.limiter2")
    limiter = LineLimiter(logger, "tries", burst=1, window=0.2)
    written = asyncio.Event()

    class Notify(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("suppressed"):
                written.set()

    handler = Notify()
    logger.addHandler(handler)
    try:
        with caplog.at_level(logging.INFO, logger=logger.name):
            for n in range(5):
                limiter.log(logging.INFO, "try %d", n)
            async with asyncio.timeout(30):
                await written.wait()
    finally:
        logger.removeHandler(handler)
    assert [r.getMessage().split(" in ")[0] for r in caplog.records] == [
        "try 0",
        "suppressed 4 similar lines (tries)",
    ]
