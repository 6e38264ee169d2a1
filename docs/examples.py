"""`make docs-examples`: run the examples of docs/api.md and rewrite their transcripts in place.

It makes the sample folders under /tmp/mediascan-examples (removed and made again at each run),
starts real `mediascan-server` processes on free ports, runs the real `grpcurl` of .venv/bin
and writes what they print into the page: each fenced block after a marker
`<!-- example: NAME -->`, and each figure between `<!-- value: NAME -->` and `<!-- /value -->`.
The servers' addresses are shown as 127.0.0.1:50051. tests/test_docs.py runs it against a copy
of the page and compares the result with the committed page, so the page shows what the server
does today.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mediascan.server.testing import SLOW_PROBE, make_corpus, make_many, make_video

BIN = Path(sys.executable).parent
PAGE = Path(__file__).resolve().parent / "api.md"
ROOT = Path("/tmp/mediascan-examples")
#: The folder the links of `links` lead to, outside the second server's allowed root.
OUTSIDE = Path("/tmp/mediascan-examples-outside")
SHOWN_ADDRESS = "127.0.0.1:50051"
SERVICE = "mediascan.v1.ScanService"
TIMEOUT = 180.0
#: One progress event per 100 s: the scans here are shorter, so each sends only its final
#: progress event and the sequence numbers are the same at every run.
PROGRESS_RATE = "0.01"
#: Files of each sample folder.
SIZES = {"many": 2000, "many2": 2000, "many3": 1000, "many4": 5000, "big": 3000}
LISTENING = re.compile(r"^mediascan-server listening on (\S+:\d+)$")
BLOCK = re.compile(r"(<!-- example: ([\w-]+) -->\n```[^\n]*\n)(.*?)(^```$)", re.S | re.M)
VALUE = re.compile(r"(<!-- value: ([\w-]+) -->)(.*?)(<!-- /value -->)", re.S)


class Server:
    """A `mediascan-server` process on a free port, its log in a file."""

    def __init__(self, name: str, *flags: str) -> None:
        self.log = ROOT / f"{name}.log"
        self.command = [str(BIN / "mediascan-server"), "--listen", "127.0.0.1:0", *flags]
        env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIASCAN_")}
        env["MEDIASCAN_NODE_NAME"] = "scan-1"  # `Job.node` the same on every machine
        with self.log.open("a") as log:
            self.process = subprocess.Popen(
                self.command,
                stdout=subprocess.PIPE,
                stderr=log,
                stdin=subprocess.DEVNULL,
                text=True,
                env=env,
            )
        assert self.process.stdout is not None
        self.banner = [self.process.stdout.readline().rstrip("\n")]
        match = LISTENING.match(self.banner[0])
        if not match:
            self.process.kill()
            raise RuntimeError(f"{name} did not start: {self.banner[0]!r}\n{self.log.read_text()}")
        self.address = match[1]
        self.banner += [self.process.stdout.readline().rstrip("\n") for _ in range(3)]

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        self.process.wait(TIMEOUT)
        assert self.process.stdout is not None
        self.process.stdout.close()


def stripped(text: str) -> str:
    """Text without trailing spaces (grpcurl indents the empty line of an empty object)."""
    return "\n".join(line.rstrip() for line in text.rstrip("\n").splitlines())


def objects(text: str) -> list[dict[str, Any]]:
    """The JSON objects grpcurl printed one after the other (each ends with `}` on a line)."""
    found, lines = [], []
    for line in text.splitlines():
        lines.append(line)
        if line == "}":
            found.append(json.loads("\n".join(lines)))
            lines = []
    return found


def chunks(text: str) -> list[str]:
    """The text of each JSON object grpcurl printed, and what follows the last one."""
    parts = re.split(r"(?<=\n}\n)", text if text.endswith("\n") else text + "\n")
    return [part.rstrip("\n") for part in parts if part.strip()]


def trim(text: str, lines: int) -> str:
    """The first `lines` lines of an object, then `...`."""
    return "\n".join([*text.splitlines()[:lines], "  ..."])


def drop(text: str, *hidden: str) -> str:
    """A printed object without the fields at the dotted paths `hidden` (e.g. `createTime`,
    `result.fileErrors`): each run of hidden fields becomes one `...` line."""
    out: list[str] = []
    stack: list[tuple[int, str]] = []
    skipping: int | None = None
    for line in text.splitlines():
        indent, bare = len(line) - len(line.lstrip()), line.strip()
        if not bare:  # grpcurl prints an empty object as `{`, an empty line, `}`
            if skipping is None:
                out.append(line)
            continue
        if skipping is not None:
            if indent > skipping or (indent == skipping and bare[:1] in "]}"):
                continue
            skipping = None
        while stack and stack[-1][0] >= indent:
            stack.pop()
        key = re.match(r'"(\w+)":', bare)
        opens = bare.endswith(("{", "["))
        if key and ".".join([*(k for _, k in stack), key[1]]) in hidden:
            if not out or out[-1] != " " * indent + "...":
                out.append(" " * indent + "...")
            skipping = indent if opens else None
            continue
        if key and opens:
            stack.append((indent, key[1]))
        out.append(line)
    return "\n".join(out)


#: Fields of a job that an excerpt leaves out.
JOB_TIMES = ("createTime", "startTime", "endTime")
JOB_DETAILS = ("path", "options", "progress", "result", *JOB_TIMES, "attempt")


def listing(items: Iterator[str] | list[str]) -> str:
    """`a, b and c`."""
    words = list(items)
    return ", ".join(words[:-1]) + f" and {words[-1]}" if len(words) > 1 else "".join(words)


def events(text: str, *hidden: str) -> str:
    """A WatchJob's output with the fields `hidden` left out of each event, and each run of more
    than two file errors or progress events shortened to its first and last."""
    parts = chunks(text)
    kinds = [
        next((k for k in ("fileError", "progress") if f'\n  "{k}": ' in part), "") for part in parts
    ]
    out: list[str] = []
    index = 0
    while index < len(parts):
        end = index
        while end + 1 < len(parts) and kinds[index] and kinds[end + 1] == kinds[index]:
            end += 1
        if end - index >= 2:
            first, last = (json.loads(parts[i])["sequence"] for i in (index + 1, end - 1))
            middle = f"... (events {first} to {last}: {kinds[index]})"
            if first == last:
                middle = f"... (event {first}: {kinds[index]})"
            out += [drop(parts[index], *hidden), middle, drop(parts[end], *hidden)]
        else:
            out += [drop(part, *hidden) for part in parts[index : end + 1]]
        index = end + 1
    return "\n".join(out)


class Runner:
    """grpcurl against the current server, and the blocks and figures the runs produce."""

    def __init__(self) -> None:
        self.blocks: dict[str, str] = {}
        self.values: dict[str, str] = {}
        self.server: Server | None = None

    def shown(self, args: list[str]) -> str:
        """The command line as the page shows it."""
        words = ["grpcurl", *(f"'{a}'" if a.startswith("{") else a for a in args)]
        line = "$ " + " ".join(words).replace(self.address, SHOWN_ADDRESS)
        if len(line) > 100 and SHOWN_ADDRESS in line:
            line = line.replace(f" {SHOWN_ADDRESS}", f" \\\n    {SHOWN_ADDRESS}", 1)
        return line

    @property
    def address(self) -> str:
        assert self.server is not None
        return self.server.address

    def args(self, method: str, body: dict[str, Any] | None) -> list[str]:
        data = ["-d", json.dumps(body)] if body is not None else []
        return ["-plaintext", *data, self.address, f"{SERVICE}/{method}"]

    def grpcurl(self, *args: str) -> tuple[str, int]:
        """What grpcurl printed (its output, then its errors) and its exit status."""
        run = subprocess.run(
            [str(BIN / "grpcurl"), *args],
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
            check=False,
        )
        return stripped(run.stdout + run.stderr).replace(
            self.address, SHOWN_ADDRESS
        ), run.returncode

    def call(self, method: str, body: dict[str, Any] | None = None) -> tuple[str, str, int]:
        """(the command as shown, its output, its exit status)."""
        args = self.args(method, body)
        out, status = self.grpcurl(*args)
        return self.shown(args), out, status

    def submit(self, body: dict[str, Any]) -> str:
        """Submit a scan without showing it; its job id."""
        _, out, status = self.call("SubmitScan", body)
        assert status == 0, out
        return str(json.loads(out)["jobId"])

    def wait(self, job_id: str) -> None:
        """Until the job is terminal: a WatchJob stream closes then."""
        _, out, status = self.call("WatchJob", {"job_id": job_id})
        assert status == 0, out

    @contextlib.contextmanager
    def stream(
        self, body: dict[str, Any], method: str = "WatchJob"
    ) -> Iterator[subprocess.Popen[str]]:
        """A WatchJob (or another server stream) run by grpcurl, read line by line."""
        process = subprocess.Popen(
            [str(BIN / "grpcurl"), *self.args(method, body)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        try:
            yield process
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(TIMEOUT)
            assert process.stdout is not None
            process.stdout.close()

    def read_object(self, process: subprocess.Popen[str]) -> str:
        """The next JSON object of a running grpcurl, as printed."""
        assert process.stdout is not None
        lines: list[str] = []
        while not lines or lines[-1] != "}":
            line = process.stdout.readline()
            if not line:
                raise RuntimeError("grpcurl ended early: " + "\n".join(lines))
            lines.append(line.rstrip("\n"))
        return stripped("\n".join(lines))

    def shell(self, name: str, *runs: tuple[str, str]) -> None:
        """Block `name`: each command line followed by what it printed."""
        self.blocks[name] = "\n\n".join(f"{cmd}\n{out}" if out else cmd for cmd, out in runs)

    def wait_running(self, job_id: str) -> None:
        """Until the job has started: event 2 is its change to RUNNING."""
        with self.stream({"job_id": job_id, "after_sequence": 1}) as process:
            assert '"toState": "JOB_STATE_RUNNING"' in self.read_object(process)


class Examples(Runner):
    """The examples' runs, in order: two servers, one stopped and started again."""

    # -- the sample folders and the first server --------------------------------------------

    def make_folders(self) -> None:
        for folder in (ROOT, OUTSIDE):
            shutil.rmtree(folder, ignore_errors=True)
        corpus = make_corpus(ROOT / "videos")
        lines = [
            "from pathlib import Path",
            "from mediascan.server.testing import SLOW_PROBE, make_corpus, make_many",
            f'make_corpus(Path("{ROOT}/videos"))',
        ]
        for name, count in SIZES.items():
            options = ', suffix=".mkv"' if name == "many3" else ""
            options += ", **SLOW_PROBE" if name == "big" else ""
            extra = SLOW_PROBE if name == "big" else {}
            make_many(ROOT / name, count, suffix=".mkv" if name == "many3" else ".mp4", **extra)
            lines.append(f'make_many(Path("{ROOT}/{name}"), {count}{options})')
        self.blocks["folders"] = "$ python -c '" + "\n".join(lines) + "'"
        self.values["corpus"] = (
            f"{len(corpus.valid)} valid videos in {len({p.suffix for p in corpus.valid})} "
            f"containers"
        )
        self.values["mp4-bytes"] = f"{(ROOT / 'many' / 'v00000.mp4').stat().st_size:,}"
        self.values["mkv-bytes"] = f"{(ROOT / 'many3' / 'v00000.mkv').stat().st_size:,}"
        self.values["big-bytes"] = f"{(ROOT / 'big' / 'v00000.mp4').stat().st_size:,}"
        self.make_links(corpus.valid[0])

    def make_links(self, video: Path) -> None:
        links = ROOT / "links"
        links.mkdir()
        OUTSIDE.mkdir()
        shutil.copyfile(video, OUTSIDE / "clip.mp4")
        (links / "elsewhere").symlink_to(OUTSIDE)
        (links / "clip-link.mp4").symlink_to(OUTSIDE / "clip.mp4")
        (links / "dangling.mkv").symlink_to("/nonexistent.mkv")
        os.mkfifo(links / "pipe.mp4")
        (links / "movies").symlink_to("../videos/movies")

    def start(self, name: str, *flags: str) -> Server:
        self.server = Server(name, *flags)
        return self.server

    def first_server(self) -> None:
        flags = ["--db", f"{ROOT}/mediascan.db", "--workers", "1", "--progress-rate", PROGRESS_RATE]
        server = self.start("first", *flags)
        command = f"$ mediascan-server --listen {SHOWN_ADDRESS} " + " ".join(flags) + " &"
        banner = "\n".join(server.banner).replace(server.address, SHOWN_ADDRESS)
        self.blocks["start"] = f"{command}\n{banner}"
        runs = [
            ["-plaintext", self.address, "list"],
            [
                "-plaintext",
                "-d",
                json.dumps({"service": SERVICE}),
                self.address,
                "grpc.health.v1.Health/Check",
            ],
            ["-plaintext", self.address, "describe", f"{SERVICE}.GetJob"],
            ["-plaintext", self.address, "describe", "mediascan.v1.WatchJobRequest"],
        ]
        self.shell("discover", *((self.shown(args), self.grpcurl(*args)[0]) for args in runs))

    # -- the examples on the first server ---------------------------------------------------

    def first_scan(self) -> str:
        body: dict[str, Any] = {"path": f"{ROOT}/videos", "request_id": "demo-0001"}
        submit = self.call("SubmitScan", body)
        job_id = str(json.loads(submit[1])["jobId"])
        self.shell("submit", submit[:2])
        self.wait(job_id)
        again = self.call("SubmitScan", body)
        self.shell("submit-again", (again[0], trim(again[1], 5)))
        self.shell("getjob", self.call("GetJob", {"jobId": job_id})[:2])
        first = self.call("ListFileErrors", {"job_id": job_id, "page_size": 2})
        token = json.loads(first[1])["nextPageToken"]
        body = {"job_id": job_id, "page_size": 2, "page_token": token}
        second = self.call("ListFileErrors", body)
        self.shell("list-file-errors", first[:2], second[:2])
        body["page_token"] = json.loads(second[1])["nextPageToken"]
        last = json.loads(self.call("ListFileErrors", body)[1])
        assert len(last["fileErrors"]) == 1 and "nextPageToken" not in last, last
        resume = self.call("WatchJob", {"job_id": job_id, "after_sequence": 2})
        assert resume[2] == 0, resume
        self.shell("resume", (resume[0], events(resume[1], "stateChange.job")))
        return job_id

    def live_watch(self) -> None:
        """A job queued behind a running one, watched from its submit to its end; the running
        one is cancelled to free the worker."""
        hold = self.submit({"path": f"{ROOT}/big"})
        self.wait_running(hold)
        submit = self.call(
            "SubmitScan", {"path": f"{ROOT}/many3", "timeout": "60s", "priority": 10}
        )
        job_id = str(json.loads(submit[1])["jobId"])
        body = {"job_id": job_id}
        with self.stream(body) as process:
            snapshot = self.read_object(process)
            assert '"state": "JOB_STATE_QUEUED"' in snapshot, snapshot
            self.cancel_delete(hold)
            assert process.stdout is not None
            rest = stripped(process.stdout.read())
            assert process.wait(TIMEOUT) == 0, rest
        watched = events(f"{snapshot}\n{rest}", "stateChange.job.path", "stateChange.job.options")
        watch = self.shown(self.args("WatchJob", body))
        self.shell("watch-live", (submit[0], trim(submit[1], 2)), (watch, watched))
        last = objects(rest)[-1]["sequence"]
        self.shell(
            "resume-end",
            self.call("WatchJob", {"job_id": job_id, "after_sequence": int(last)})[:2],
            (
                (r := self.call("WatchJob", {"job_id": job_id, "after_sequence": 999}))[0],
                drop(r[1], *(f"snapshot.job.{k}" for k in JOB_DETAILS)),
            ),
        )

    def cancel_delete(self, job_id: str) -> None:
        delete = self.call("DeleteJob", {"job_id": job_id})
        cancel = self.call("CancelJob", {"job_id": job_id})
        self.shell("cancel", delete[:2], cancel[:2], self.call("DeleteJob", {"job_id": job_id})[:2])
        again = self.call("DeleteJob", {"job_id": job_id})
        assert "JOB_NOT_FOUND" in again[1], again

    def time_out(self) -> None:
        body = {"path": f"{ROOT}/big", "full": True, "timeout": "0.5s"}
        job_id = self.submit(body)
        self.wait(job_id)
        job = self.call("GetJob", {"job_id": job_id})[1]
        self.blocks["timeout"] = drop(job, "jobId", "progress", *JOB_TIMES, "attempt")
        self.values["timeout-body"] = f"`{json.dumps(body)}`"

    def deduplication(self) -> None:
        body: dict[str, Any] = {"path": f"{ROOT}/many2", "full": True}
        first = self.call("SubmitScan", body)
        joined = self.call("SubmitScan", {**body, "request_id": "dedup-0001"})
        other = self.call("SubmitScan", {**body, "priority": 5})
        self.shell(
            "dedup", (first[0], trim(first[1], 2)), joined[:2], (other[0], trim(other[1], 2))
        )
        for run in (first, other):
            self.wait(str(json.loads(run[1])["jobId"]))
        again = self.call("SubmitScan", {**body, "request_id": "dedup-0001"})
        self.shell("dedup-again", (again[0], trim(again[1], 5)))

    def errors(self) -> None:
        bodies: list[tuple[str, dict[str, Any]]] = [
            ("SubmitScan", {"path": "videos"}),
            ("SubmitScan", {"path": f"{ROOT}/videos", "timeout": "-5s"}),
            ("SubmitScan", {"path": f"{ROOT}/videos", "request_id": "demo-0001", "full": True}),
            ("SubmitScan", {"path": f"{ROOT}/nowhere"}),
            ("SubmitScan", {"path": f"{ROOT}/videos/clip-h264-aac.mp4"}),
            ("GetJob", {"job_id": "j_nope"}),
        ]
        runs = [self.call(method, body) for method, body in bodies]
        self.shell("errors", *(run[:2] for run in runs))
        self.values["error-exits"] = listing(str(run[2]) for run in runs)

    def videos(self) -> None:
        body: dict[str, Any] = {"path_prefix": f"{ROOT}/videos/movies", "page_size": 2}
        first = self.call("ListVideos", body)
        token = json.loads(first[1])["nextPageToken"]
        second = json.loads(self.call("ListVideos", {**body, "page_token": token})[1])
        assert "nextPageToken" not in second, second
        assert [v["path"] for v in second["videos"]] == [
            f"{ROOT}/videos/movies/web/clip-vp8.webm",
            f"{ROOT}/videos/movies/web/clip-vp9.webm",
        ], second
        body = {"path_prefix": f"{ROOT}/videos", "page_size": 2, "page_token": token}
        self.shell("list-videos", first[:2], self.call("ListVideos", body)[:2])
        body = {"path_prefix": f"{ROOT}/videos", "video_codec": "vp9"}
        vp9 = json.loads(self.call("ListVideos", body)[1])
        assert [v["path"] for v in vp9["videos"]] == [f"{ROOT}/videos/movies/web/clip-vp9.webm"]
        self.video_orders()

    def video_orders(self) -> None:
        """A token of one order used with another, and an order that does not exist."""
        body: dict[str, Any] = {"path_prefix": f"{ROOT}/videos", "page_size": 2}
        longest = json.loads(self.call("ListVideos", {**body, "order_by": "duration desc"})[1])
        seconds = [float(v["duration"].removesuffix("s")) for v in longest["videos"]]
        assert seconds == sorted(seconds, reverse=True), seconds
        # A token of "path desc" holds a path, which every run shows alike (not an id).
        last = json.loads(self.call("ListVideos", {**body, "order_by": "path desc"})[1])
        token = last["nextPageToken"]
        misused = self.call("ListVideos", {**body, "order_by": "duration", "page_token": token})
        unknown = self.call("ListVideos", {**body, "order_by": "length desc"})
        self.shell("list-videos-order", misused[:2], unknown[:2])

    def rescan(self) -> None:
        gone = ROOT / "videos" / "movies" / "two-audio.mkv"
        gone.unlink()
        job_id = self.submit({"path": f"{ROOT}/videos"})
        self.wait(job_id)
        job = self.call("GetJob", {"job_id": job_id})[1]
        self.blocks["rescan"] = drop(
            job, "jobId", "path", "options", "progress", *JOB_TIMES, "result.fileErrors"
        )
        self.shell("rescan-video", self.call("GetVideo", {"path": str(gone)})[:2])

    # -- the second server: bounds, roots, links, a shutdown --------------------------------

    def second_server(self) -> list[str]:
        flags = ["--db", f"{ROOT}/second.db", "--workers", "1", "--max-queued", "1"]
        flags += ["--shutdown-grace", "0s", "--allow-root", str(ROOT)]
        self.start("second", *flags, "--progress-rate", PROGRESS_RATE)
        self.values["second-flags"] = f"`{' '.join(flags[2:])}`"
        hold = self.submit({"path": f"{ROOT}/big"})
        self.wait_running(hold)
        queued = self.submit({"path": f"{ROOT}/many"})
        full = self.call("SubmitScan", {"path": f"{ROOT}/many", "full": True})
        outside = self.call("SubmitScan", {"path": f"{ROOT}/../../etc"})
        self.shell("limits", full[:2], outside[:2])
        self.values["limit-exits"] = listing([str(full[2]), str(outside[2])])
        for job_id in (queued, hold):
            self.call("CancelJob", {"job_id": job_id})
        links = self.submit({"path": f"{ROOT}/links", "follow_symlinks": True})
        self.wait(links)
        job = self.call("GetJob", {"job_id": links})[1]
        others = ("jobId", "state", "path", "options", "progress", "error", "attempt")
        self.blocks["links"] = drop(job, *others, *JOB_TIMES, "lastSequence", "requestId")
        listed = json.loads(self.call("ListVideos", {"path_prefix": f"{ROOT}/links"})[1])
        assert [v["path"] for v in listed["videos"]] == [
            f"{ROOT}/links/movies/{name}"
            for name in ("clip-h264-opus.mkv", "web/clip-vp8.webm", "web/clip-vp9.webm")
        ], listed
        return flags

    def shutdown(self, flags: list[str]) -> None:
        """A watcher of a scan when the server stops, and its resume after the restart."""
        assert self.server is not None
        job_id = self.submit({"path": f"{ROOT}/many4"})
        body = {"job_id": job_id, "after_sequence": 1}
        with self.stream(body) as process:
            running = self.read_object(process)
            self.wait_written(f"{ROOT}/many4")
            self.server.stop()
            assert process.stdout is not None
            rest = stripped(process.stdout.read())
            status = process.wait(TIMEOUT)
        self.values["shutdown-exit"] = str(status)
        stream = f"{running}\n{rest}".replace(self.address, SHOWN_ADDRESS)
        hidden: tuple[str, ...] = ("stateChange.job.path", "stateChange.job.options")
        hidden += ("stateChange.job.createTime",)
        self.shell("shutdown", (self.shown(self.args("WatchJob", body)), events(stream, *hidden)))
        log = self.server.log.read_text().splitlines()
        since = next(i for i, line in enumerate(log) if "SIGTERM" in line)
        self.blocks["shutdown-log"] = "\n".join(log[since:])
        last = int(re.findall(r"after_sequence=(\d+)", rest)[-1])
        restarted = self.start("second", *flags, "--progress-rate", PROGRESS_RATE)
        said = re.search(
            r"recovered job .*? for \S+", restarted.log.read_text()[len("\n".join(log)) :]
        )
        assert said is not None, "the restarted server logged no recovered job"
        self.values["recovered"] = f"`{said[0]}`"
        body = {"job_id": job_id, "after_sequence": last}
        resume = self.call("WatchJob", body)
        assert resume[2] == 0, resume
        hidden += ("stateChange.job.progress", "stateChange.job.endTime")
        self.shell("shutdown-resume", (resume[0], events(resume[1], *hidden)))
        result = objects(resume[1])[-1]["stateChange"]["job"]["result"]
        self.values["attempt-1"] = f"{result.get('unchanged', 0):,}"
        self.values["attempt-2"] = f"{result.get('added', 0):,}"
        self.values["many4-files"] = f"{result['filesTotal']:,}"
        restarted.stop()

    def wait_written(self, folder: str) -> None:
        """Until the library holds a video of `folder`: the scan has then handled files that no
        progress event has reported yet, so a stop sends a final progress event."""
        deadline = time.monotonic() + TIMEOUT
        body = {"path_prefix": folder, "page_size": 1}
        while not json.loads(self.call("ListVideos", body)[1]).get("videos"):
            assert time.monotonic() < deadline, f"no video of {folder} in the library"

    def run(self) -> None:
        self.make_folders()
        try:
            self.first_server()
            self.first_scan()
            self.live_watch()
            self.time_out()
            self.deduplication()
            self.errors()
            self.videos()
            self.rescan()
            assert self.server is not None
            self.server.stop()
            self.shutdown(self.second_server())
        finally:
            if self.server is not None and self.server.process.poll() is None:
                self.server.stop(signal.SIGKILL)
        libraries = LibraryExamples()
        libraries.run()
        self.blocks.update(libraries.blocks)
        self.values.update(libraries.values)


#: The library uid the page shows: each run makes another.
SHOWN_UID = "5f1c2d3e4a5b6c7d"
#: Fields of a library change that the feed's excerpts leave out: when, and the video.
CHANGE_DETAILS = ("time", "video")


class LibraryExamples(Runner):
    """The examples of libraries, on a server of their own: the library RPCs, the change feed
    of a library while scans change its folder, a resume, RESYNCs, and ListVideos of it."""

    def __init__(self) -> None:
        super().__init__()
        self.films = ROOT / "films"
        self.uid = ""

    def shown_uid(self, text: str) -> str:
        return text.replace(self.uid, SHOWN_UID) if self.uid else text

    def call(self, method: str, body: dict[str, Any] | None = None) -> tuple[str, str, int]:
        shown, out, status = super().call(method, body)
        return self.shown_uid(shown), self.shown_uid(out), status

    def watch(self, body: dict[str, Any], count: int, *hidden: str) -> tuple[str, str]:
        """A WatchLibrary's first `count` changes (without the fields `hidden`), as shown."""
        with self.stream(body, "WatchLibrary") as process:
            changes = [self.read_object(process) for _ in range(count)]
        shown = self.shown(self.args("WatchLibrary", body))
        return self.shown_uid(shown), self.shown_uid("\n".join(drop(c, *hidden) for c in changes))

    def video(self, name: str, seconds: float = 0.2) -> None:
        make_video(self.films / name, width=64, height=48, seconds=seconds)

    def scan(self) -> None:
        """A scan of the library's folder, to its end, not shown."""
        self.wait(self.submit({"path": str(self.films), "force": True}))

    def run(self) -> None:
        flags = ["--db", f"{ROOT}/libraries.db", "--workers", "1"]
        self.server = Server("libraries", *flags)
        self.values["libraries-flags"] = f"`{' '.join(flags)}`"
        self.video("a.mp4")
        (self.films / "extras").mkdir()
        (ROOT / "shows").mkdir()
        try:
            self.resources()
            self.feed()
            self.follow_up()
        finally:
            self.server.stop()

    def resources(self) -> None:
        """CreateLibrary, its errors, ListLibraries and UpdateLibrary."""
        films = {"root": str(self.films), "watch_mode": "WATCH_MODE_OFF", "quiet_window": "0.001s"}
        create = super().call("CreateLibrary", {"library_id": "films", "library": films})
        self.uid = json.loads(create[1])["uid"]
        self.shell("library-create", (create[0], self.shown_uid(create[1])))
        shows = {"library_id": "shows", "library": {"root": f"{ROOT}/shows"}}
        assert self.call("CreateLibrary", shows)[2] == 0
        overlap = {"library_id": "extras", "library": {"root": f"{self.films}/extras"}}
        self.shell(
            "library-errors",
            self.call("CreateLibrary", overlap)[:2],
            self.call("GetLibrary", {"name": "libraries/nope"})[:2],
        )
        first = self.call("ListLibraries", {"page_size": 1})
        token = json.loads(first[1])["nextPageToken"]
        rest = self.call("ListLibraries", {"page_size": 1, "page_token": token})
        hidden = [f"libraries.{k}" for k in ("status", "uid", "createTime")]
        self.shell(
            "library-list", (first[0], drop(first[1], *hidden)), (rest[0], drop(rest[1], *hidden))
        )
        films = {"name": "libraries/films", "rescan_interval": "3600s", "full_rescan_every": 4}
        films["watch_mode"] = "WATCH_MODE_POLL"
        update = {
            "library": films,
            "update_mask": {"paths": ["rescan_interval", "full_rescan_every"]},
        }
        shown, out, _ = self.call("UpdateLibrary", update)
        self.shell("library-update", (shown, drop(out, "status")))

    def feed(self) -> None:
        """A feed from the start while scans add, rewrite, move and remove videos, one a scan
        (so that the order is the same at every run)."""
        body = {"name": "libraries/films"}
        with self.stream(body, "WatchLibrary") as process:
            changes = [self.read_object(process)]
            self.scan()  # a.mp4 added
            self.video("b.mp4", seconds=0.4)
            self.scan()
            self.video("a.mp4", seconds=0.6)  # rewritten: another size and duration
            self.scan()
            os.rename(self.films / "b.mp4", self.films / "c.mp4")
            self.scan()
            os.unlink(self.films / "a.mp4")
            self.scan()
            changes += [self.read_object(process) for _ in range(5)]
        shown = self.shown(self.args("WatchLibrary", body))
        text = "\n".join(drop(change, *CHANGE_DETAILS) for change in changes)
        self.shell("library-feed", (shown, self.shown_uid(text)))

    def follow_up(self) -> None:
        """A resume, RESYNCs, the listing of the library, its status, a deletion."""
        body = {"name": "libraries/films", "after_sequence": 3, "library_uid": self.uid}
        self.shell("library-resume", self.watch(body, 2, *CHANGE_DETAILS))
        self.shell(
            "library-resync",
            self.watch({"name": "films", "after_sequence": 3, "library_uid": "0" * 16}, 1, "time"),
            self.watch({"name": "films", "after_sequence": 99}, 1, "time"),
        )
        listed = self.call("ListVideos", {"library": "libraries/films"})
        video = json.loads(listed[1])["videos"][0]
        hidden = [f"videos.{key}" for key in video if key not in ("videoId", "path")]
        self.shell("library-videos", (listed[0], drop(listed[1], *hidden)))
        self.shell("library-get", self.call("GetLibrary", {"name": "libraries/films"})[:2])
        self.shell(
            "library-delete",
            self.call("DeleteLibrary", {"name": "libraries/shows"})[:2],
            self.call("GetLibrary", {"name": "libraries/shows"})[:2],
        )


def rewrite(page: str, blocks: dict[str, str], values: dict[str, str]) -> str:
    """The page with each marked block and value replaced; every mark must have its run and
    every run its mark."""
    marked = {m[2] for m in BLOCK.finditer(page)}
    missing, unused = marked - blocks.keys(), blocks.keys() - marked
    if missing or unused:
        raise SystemExit(f"api.md marks without a run: {missing}; runs without a mark: {unused}")
    page = BLOCK.sub(lambda m: f"{m[1]}{blocks[m[2]]}\n{m[4]}", page)
    named = {m[2] for m in VALUE.finditer(page)}
    if named != values.keys():
        raise SystemExit(f"value marks {sorted(named)} but runs {sorted(values)}")
    return VALUE.sub(lambda m: f"{m[1]}{values[m[2]]}{m[4]}", page)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make docs-examples", description=__doc__)
    parser.add_argument("--page", type=Path, default=PAGE, help="the page to rewrite")
    parser.add_argument("--keep", action="store_true", help=f"keep {ROOT} and its databases")
    args = parser.parse_args(argv)
    # One run at a time: the runs share the fixed folders that the page shows.
    with open(f"{ROOT}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        examples = Examples()
        try:
            examples.run()
        finally:
            if not args.keep:
                for folder in (ROOT, OUTSIDE):
                    shutil.rmtree(folder, ignore_errors=True)
        page: Path = args.page
        page.write_text(rewrite(page.read_text(), examples.blocks, examples.values))
    print(
        f"rewrote {len(examples.blocks)} transcripts and {len(examples.values)} figures in {page}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
