"""The baselines: a bare grpc.aio server with no application logic, run as its own process.

`python -m bench.bare --loop=asyncio echo --response-hex HEX` answers every unary call on
`/bench.Bare/Echo` at once: it parses the request as a SubmitScanRequest and answers with the
SubmitScanResponse given in hex (one a real server returned): the floor for a unary RPC with
SubmitScan's messages.

`python -m bench.bare --loop=asyncio push --rate 10 --event-bytes N` serves `/bench.Bare/Watch`:
every stream gets the current `JobEvent` (a progress event of N bytes, its `event_time` set when
it is made) and then each new one, made `--rate` times a second by one ticker and shared by all
streams (the latest value: a slow stream skips, never queues). The floor for WatchJob's fan-out.

Both use mediascan's own gRPC server options and print `bare listening on HOST:PORT` first.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import AsyncIterator
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc

from mediascan.server.app import server_options
from mediascan.server.config import Config
from mediascan.v1 import scan_pb2

from .common import run_async

SERVICE = "bench.Bare"
ECHO_METHOD = f"/{SERVICE}/Echo"
WATCH_METHOD = f"/{SERVICE}/Watch"
JOB_ID = "j_" + "0" * 26


def progress_event(sequence: int, size: int) -> scan_pb2.JobEvent:
    """A progress JobEvent padded (through current_path) to about `size` bytes."""
    event = _event(sequence, "")
    pad = max(0, size - event.ByteSize() - 2)
    event = _event(sequence, "/" + "v" * pad)
    while event.ByteSize() > size and pad > 0:
        pad -= 1
        event = _event(sequence, "/" + "v" * pad)
    return event


def _event(sequence: int, path: str) -> scan_pb2.JobEvent:
    event = scan_pb2.JobEvent(
        job_id=JOB_ID,
        sequence=sequence,
        progress=scan_pb2.Progress(
            phase=scan_pb2.SCAN_PHASE_PROBING,
            files_found=40_000,
            files_done=sequence,
            files_total=40_000,
            added=sequence,
            bytes_done=sequence * 50_000,
            current_path=path,
            fraction=sequence / 40_000,
        ),
    )
    event.event_time.GetCurrentTime()
    return event


class Ticker:
    """Makes `rate` events a second and wakes every stream for each."""

    def __init__(self, rate: float, size: int) -> None:
        self.rate = rate
        self.size = size
        self.latest: scan_pb2.JobEvent | None = None
        self.changed = asyncio.Event()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        interval = 1.0 / self.rate
        due = loop.time()
        sequence = 0
        while True:
            sequence += 1
            self.latest = progress_event(sequence, self.size)
            changed, self.changed = self.changed, asyncio.Event()
            changed.set()
            due += interval
            await asyncio.sleep(max(0.0, due - loop.time()))

    async def watch(self, request: bytes, context: Any) -> AsyncIterator[scan_pb2.JobEvent]:
        sent = 0
        while True:
            event = self.latest
            if event is not None and event.sequence != sent:
                sent = event.sequence
                yield event
            else:
                await self.changed.wait()


async def serve(args: argparse.Namespace) -> None:
    handlers: dict[str, grpc.RpcMethodHandler[Any, Any]] = {}
    ticker: Ticker | None = None
    if args.kind == "echo":
        reply = scan_pb2.SubmitScanResponse.FromString(bytes.fromhex(args.response_hex))

        async def echo(
            request: scan_pb2.SubmitScanRequest, context: Any
        ) -> scan_pb2.SubmitScanResponse:
            return reply

        handlers["Echo"] = grpc.unary_unary_rpc_method_handler(
            echo,
            request_deserializer=scan_pb2.SubmitScanRequest.FromString,
            response_serializer=scan_pb2.SubmitScanResponse.SerializeToString,
        )
    else:
        ticker = Ticker(args.rate, args.event_bytes)
        handlers["Watch"] = grpc.unary_stream_rpc_method_handler(
            ticker.watch, response_serializer=scan_pb2.JobEvent.SerializeToString
        )
    server = grpc.aio.server(options=server_options(Config()))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    tasks = [asyncio.create_task(ticker.run())] if ticker is not None else []
    print(f"bare listening on 127.0.0.1:{port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    for task in tasks:
        task.cancel()
    await server.stop(0.5)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bare")
    parser.add_argument("--loop", default="asyncio")
    sub = parser.add_subparsers(dest="kind", required=True)
    echo = sub.add_parser("echo")
    echo.add_argument("--response-hex", required=True)
    push = sub.add_parser("push")
    push.add_argument("--rate", type=float, default=10.0)
    push.add_argument("--event-bytes", type=int, required=True)
    args = parser.parse_args()
    run_async(serve(args), args.loop)
    return 0


if __name__ == "__main__":
    sys.exit(main())
