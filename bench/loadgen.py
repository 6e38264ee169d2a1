"""The load generator, run as its own process (`python -m bench.loadgen --loop=L MODE ...`).

`unary`: closed-loop unary calls of pre-serialized SubmitScanRequests (one per folder
`ROOT/f00000`, `ROOT/f00001`, ...), `--concurrency` in flight over `--channels` connections, sent
and received as raw bytes so that the client does the same work against mediascan and against the
bare echo. Either for `--warmup` + `--duration` seconds (folders are cycled; prints
`window-start` and `window-end` around the measured window), or `--once`: every folder exactly
once.

`watch`: `--subscribers` server streams over connections of `--per-channel` streams; each records
the delay from an event's `event_time` to its receipt. `--stalled` more streams read their first
event and then never read again (on connections with a 1 KiB flow-control window, so the server
feels it at once). Prints `attached` when every stream got its first event, `window-end` after
`--warmup` + `--duration` seconds, then the result.

The last line is always `RESULT {json}`. Every loop is bounded in time (or count) and talks only
to the given 127.0.0.1 address.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import os
import sys
import time
from typing import Any

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

import grpc

from mediascan.v1 import scan_pb2

from .common import CHANNEL_OPTIONS, folder_name, percentile, run_async

#: A stalled subscriber's connection: no window growth, a 1 KiB stream window.
STALL_OPTIONS: list[tuple[str, Any]] = [
    *CHANNEL_OPTIONS,
    ("grpc.http2.bdp_probe", 0),
    ("grpc.http2.lookahead_bytes", 1024),
]
#: Most lag samples returned (a uniform thinning beyond it).
MAX_SAMPLES = 200_000


def say(line: str) -> None:
    # uvloop may leave stdout non-blocking: a long result line would then be cut at the pipe's
    # 64 KiB.
    os.set_blocking(sys.stdout.fileno(), True)
    print(line, flush=True)


# -- unary ----------------------------------------------------------------------------------------


async def unary(args: argparse.Namespace) -> dict[str, Any]:
    shard, shards = (int(x) for x in args.shard.split("/"))
    indices = range(shard, args.folders, shards)
    requests = [
        scan_pb2.SubmitScanRequest(path=f"{args.root}/{folder_name(i)}").SerializeToString()
        for i in indices
    ]
    channels = [
        grpc.aio.insecure_channel(args.target, options=CHANNEL_OPTIONS)
        for _ in range(args.channels)
    ]
    await asyncio.wait_for(asyncio.gather(*(c.channel_ready() for c in channels)), 30)
    methods = [c.unary_unary(args.method) for c in channels]
    counter = itertools.count()
    errors: collections.Counter[str] = collections.Counter()
    latencies: list[int] = []  # microseconds, calls ending in the window (or all, --once)
    sent = 0
    loop = asyncio.get_running_loop()
    start = loop.time()
    window_start = start + args.warmup
    window_end = window_start + args.duration
    hard_end = start + args.limit
    first_send = time.time()
    last_end = first_send

    async def client(number: int) -> None:
        nonlocal sent, last_end
        method = methods[number % len(methods)]
        while True:
            index = next(counter)
            if args.once and index >= len(requests):
                return
            now = loop.time()
            if now >= hard_end or (not args.once and now >= window_end):
                return
            request = requests[index % len(requests)]
            sent += 1
            began = time.perf_counter_ns()
            try:
                await method(request, timeout=30)
            except grpc.aio.AioRpcError as exc:
                errors[exc.code().name] += 1
                continue
            ended = time.perf_counter_ns()
            now = loop.time()
            if args.once or window_start <= now < window_end:
                latencies.append((ended - began) // 1000)
            last_end = time.time()

    async def marks() -> None:
        """Tell the orchestrator when the measured window starts and ends (it reads the
        server's CPU time then)."""
        await asyncio.sleep(max(0.0, window_start - loop.time()))
        say("window-start")
        await asyncio.sleep(max(0.0, window_end - loop.time()))
        say("window-end")

    marker = None if args.once else asyncio.create_task(marks())
    await asyncio.gather(*(client(i) for i in range(args.concurrency)))
    if marker is not None:
        await marker
    elapsed = loop.time() - start
    for channel in channels:
        await channel.close()
    seconds = elapsed if args.once else args.duration
    return {
        "completed": len(latencies),
        "rps": len(latencies) / seconds if seconds > 0 else None,
        "p50_ms": _ms(percentile(latencies, 50)),
        "p99_ms": _ms(percentile(latencies, 99)),
        "latencies_us": _thin(latencies),
        "errors": dict(errors),
        "sent": sent,
        "wrapped": sent > len(requests),
        "first_send": first_send,
        "last_end": last_end,
        "elapsed": elapsed,
        "timed_out": loop.time() >= hard_end,
    }


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1000


def _thin(samples: list[int]) -> list[int]:
    if len(samples) <= MAX_SAMPLES:
        return samples
    step = len(samples) / MAX_SAMPLES
    return [samples[int(i * step)] for i in range(MAX_SAMPLES)]


# -- watch ----------------------------------------------------------------------------------------


class _Watch:
    def __init__(self, total: int) -> None:
        self.total = total
        self.attached = 0
        self.all_attached = asyncio.Event()
        self.window_start = float("inf")  # time.time_ns() bounds, set once all are attached
        self.window_end = float("inf")
        self.delivered = 0
        self.lags: list[int] = []  # microseconds
        self.ended = 0  # streams the server closed
        self.resyncs = 0
        self.errors: collections.Counter[str] = collections.Counter()
        self.trace: list[tuple[int, int, int]] = []  # reader 0: (sequence, event ns, files_done)

    def attach(self) -> None:
        self.attached += 1
        if self.attached >= self.total:
            self.all_attached.set()


async def _reader(number: int, call: Any, state: _Watch) -> None:
    first = True
    try:
        async for event in call:
            now = time.time_ns()
            if first:
                first = False
                state.attach()
            if state.window_start <= now < state.window_end:
                sent_ns = event.event_time.ToNanoseconds()
                state.delivered += 1
                state.lags.append((now - sent_ns) // 1000)
                kind = event.WhichOneof("kind")
                if kind == "snapshot" and event.snapshot.resync:
                    state.resyncs += 1
                if number == 0:
                    done = event.progress.files_done if kind == "progress" else -1
                    state.trace.append((event.sequence, sent_ns, done))
        state.ended += 1
    except asyncio.CancelledError:
        raise
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.CANCELLED:
            state.errors[exc.code().name] += 1


async def _staller(call: Any, state: _Watch, stop: asyncio.Event) -> None:
    try:
        await call.read()
        state.attach()
        await stop.wait()  # never reads again
    except grpc.aio.AioRpcError as exc:
        if exc.code() != grpc.StatusCode.CANCELLED:
            state.errors[exc.code().name] += 1


async def watch(args: argparse.Namespace) -> dict[str, Any]:
    request = bytes.fromhex(args.request_hex)
    state = _Watch(args.subscribers + args.stalled)
    stop = asyncio.Event()
    channels: list[grpc.aio.Channel] = []
    calls: list[Any] = []
    tasks: list[asyncio.Task[None]] = []

    def groups(count: int) -> list[int]:
        return [min(args.per_channel, count - i) for i in range(0, count, args.per_channel)]

    for stalled, count in [(False, args.subscribers), (True, args.stalled)]:
        for size in groups(count):
            options = STALL_OPTIONS if stalled else CHANNEL_OPTIONS
            channel = grpc.aio.insecure_channel(args.target, options=options)
            channels.append(channel)
            method = channel.unary_stream(
                args.method, response_deserializer=scan_pb2.JobEvent.FromString
            )
            for _ in range(size):
                call = method(request)
                calls.append(call)
                if stalled:
                    tasks.append(asyncio.create_task(_staller(call, state, stop)))
                else:
                    tasks.append(asyncio.create_task(_reader(len(tasks), call, state)))
    try:
        await asyncio.wait_for(state.all_attached.wait(), args.attach_timeout)
    except TimeoutError:
        for call in calls:
            call.cancel()
        raise SystemExit(
            f"only {state.attached} of {state.total} streams got an event in "
            f"{args.attach_timeout}s ({dict(state.errors)})"
        ) from None
    attached_at = time.time_ns()
    say("attached")
    state.window_start = attached_at + args.warmup * 1e9
    state.window_end = state.window_start + args.duration * 1e9
    await asyncio.sleep((state.window_end - time.time_ns()) / 1e9)
    say("window-end")
    await asyncio.sleep(0.3)
    stop.set()
    for call in calls:
        call.cancel()
    await asyncio.wait(tasks, timeout=30)
    for channel in channels:
        await channel.close()
    trace = state.trace
    source_rate = scan_rate = None
    if len(trace) >= 2 and trace[-1][1] > trace[0][1]:
        span = (trace[-1][1] - trace[0][1]) / 1e9
        source_rate = (trace[-1][0] - trace[0][0]) / span
        done = [t for t in trace if t[2] >= 0]
        if len(done) >= 2 and done[-1][1] > done[0][1]:
            scan_rate = (done[-1][2] - done[0][2]) / ((done[-1][1] - done[0][1]) / 1e9)
    return {
        "subscribers": args.subscribers,
        "stalled": args.stalled,
        "delivered": state.delivered,
        "delivered_per_s": state.delivered / args.duration,
        "lag_p50_ms": _ms(percentile(state.lags, 50)),
        "lag_p99_ms": _ms(percentile(state.lags, 99)),
        "lags_us": _thin(state.lags),
        "source_events_per_s": source_rate,
        "scan_files_per_s": scan_rate,
        "ended": state.ended,
        "resyncs": state.resyncs,
        "errors": dict(state.errors),
    }


# -- main -----------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.loadgen")
    parser.add_argument("--loop", default="asyncio")
    sub = parser.add_subparsers(dest="mode", required=True)
    u = sub.add_parser("unary")
    u.add_argument("--target", required=True)
    u.add_argument("--method", required=True)
    u.add_argument("--root", required=True, help="folder holding f00000, f00001, ...")
    u.add_argument("--folders", type=int, required=True)
    u.add_argument("--shard", default="0/1", help="i/n: this process takes folders i, i+n, ...")
    u.add_argument("--channels", type=int, default=4)
    u.add_argument("--concurrency", type=int, default=64)
    u.add_argument("--warmup", type=float, default=1.0)
    u.add_argument("--duration", type=float, default=5.0)
    u.add_argument("--once", action="store_true", help="send every folder once, then stop")
    u.add_argument("--limit", type=float, default=600.0, help="stop after this long regardless")
    w = sub.add_parser("watch")
    w.add_argument("--target", required=True)
    w.add_argument("--method", required=True)
    w.add_argument("--request-hex", default="")
    w.add_argument("--subscribers", type=int, required=True)
    w.add_argument("--stalled", type=int, default=0)
    w.add_argument("--per-channel", type=int, default=100)
    w.add_argument("--warmup", type=float, default=1.0)
    w.add_argument("--duration", type=float, default=5.0)
    w.add_argument("--attach-timeout", type=float, default=60.0)
    args = parser.parse_args()
    if not args.target.startswith("127.0.0.1:"):
        parser.error("the load generator only talks to 127.0.0.1")
    result = run_async(unary(args) if args.mode == "unary" else watch(args), args.loop)
    say("RESULT " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
