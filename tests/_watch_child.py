"""A FolderWatcher in a process of its own, for the tests that need one: a user namespace with a
small watch limit, a paused process whose queue overflows, a private mount namespace.

    python _watch_child.py ROOT [--settle S] [--retry S] [--limit N]

Prints JSON lines on stdout: {"ready": {"watched": N, "blind": [...]}} once the watcher has
started, then one {"signal": NAME, ...fields} per signal, and {"end": true} when iteration ends.
Reads JSON lines on stdin: {"limit": N} sets this user namespace's watch limit
(/proc/sys/user/max_inotify_watches), {"run": [argv]} runs a command here (in this process's
namespaces) and answers {"ran": returncode, "stderr": ...}. End of input closes the watcher.

--limit and {"limit": N} refuse to run outside a user namespace of its own: the limit of the
machine's initial namespace is never touched.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import subprocess
import sys

from mediascan.server.watching import FolderWatcher, Signal

USER_LIMIT = "/proc/sys/user/max_inotify_watches"


def say(**fields: object) -> None:
    sys.stdout.write(json.dumps(fields, sort_keys=True) + "\n")
    sys.stdout.flush()


def as_json(signal: Signal) -> dict[str, object]:
    fields: dict[str, object] = {"signal": type(signal).__name__}
    for name, value in dataclasses.asdict(signal).items():
        fields[name] = sorted(value) if isinstance(value, frozenset | tuple) else value
    return fields


def set_limit(limit: int) -> None:
    """This user namespace's inotify watch limit; never the initial namespace's."""
    with open("/proc/self/uid_map") as file:
        initial = file.read().split() == ["0", "0", "4294967295"]  # the initial namespace's map
    if initial:
        raise SystemExit("refusing to change the watch limit outside a user namespace")
    with open(USER_LIMIT, "w") as file:
        file.write(f"{limit}\n")


async def commands(watcher: FolderWatcher) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        command = json.loads(line)
        if "limit" in command:
            set_limit(int(command["limit"]))
            say(limit=command["limit"])
        elif "run" in command:
            done = subprocess.run(command["run"], capture_output=True, text=True, check=False)
            say(ran=done.returncode, stderr=done.stderr)
    watcher.close()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("root")
    parser.add_argument("--settle", type=float, default=0.2)
    parser.add_argument("--retry", type=float, default=0.3)
    parser.add_argument("--limit", type=int)
    args = parser.parse_args()
    if args.limit is not None:
        set_limit(args.limit)
    watcher = FolderWatcher(args.root, settle_s=args.settle, retry_s=args.retry)
    await watcher.start()
    say(ready={"watched": watcher.watched, "blind": list(watcher.blind)})
    reading = asyncio.create_task(commands(watcher), name="commands")
    async for signal in watcher:
        say(**as_json(signal))
    say(end=True)
    reading.cancel()


if __name__ == "__main__":
    asyncio.run(main())
