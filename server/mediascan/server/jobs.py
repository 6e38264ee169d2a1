"""The job model: states, the allowed transitions, ids, and the scan spec a job runs with.

The live job itself is a `mediascan.v1.Job` message: it is what the store persists, what GetJob
returns and what snapshots carry, so there is one representation and no mapping layer to drift.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import hashlib
import os
import random
import time

from google.protobuf import duration_pb2, timestamp_pb2

from mediascan.v1 import scan_pb2


class JobState(enum.IntEnum):
    """A job's place in its life cycle (the numbers are the contract's `JobState`)."""

    #: Accepted and committed; waiting for a worker.
    QUEUED = scan_pb2.JOB_STATE_QUEUED
    #: A worker is scanning.
    RUNNING = scan_pb2.JOB_STATE_RUNNING
    #: Finished; per-file errors are in the result.
    SUCCEEDED = scan_pb2.JOB_STATE_SUCCEEDED
    #: Could not run or stopped on an error.
    FAILED = scan_pb2.JOB_STATE_FAILED
    #: Ran out of time; partial counts kept.
    TIMED_OUT = scan_pb2.JOB_STATE_TIMED_OUT
    #: Cancelled by a client; partial counts kept.
    CANCELLED = scan_pb2.JOB_STATE_CANCELLED


TERMINAL: frozenset[JobState] = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.TIMED_OUT, JobState.CANCELLED}
)
ACTIVE: frozenset[JobState] = frozenset({JobState.QUEUED, JobState.RUNNING})

#: Every allowed transition. RUNNING -> QUEUED is the re-queue of a job cut off by a shutdown.
TRANSITIONS: frozenset[tuple[JobState, JobState]] = frozenset(
    {
        (JobState.QUEUED, JobState.RUNNING),
        (JobState.QUEUED, JobState.CANCELLED),
        (JobState.QUEUED, JobState.FAILED),
        (JobState.RUNNING, JobState.QUEUED),
        (JobState.RUNNING, JobState.SUCCEEDED),
        (JobState.RUNNING, JobState.FAILED),
        (JobState.RUNNING, JobState.TIMED_OUT),
        (JobState.RUNNING, JobState.CANCELLED),
    }
)


class IllegalTransition(RuntimeError):
    """A programmer error: code asked for a state change the state machine forbids."""


def check_transition(current: int, target: JobState) -> None:
    if (JobState(current), target) not in TRANSITIONS:
        raise IllegalTransition(f"{JobState(current).name} -> {target.name} is not allowed")


def is_terminal(state: int) -> bool:
    return state in TERMINAL


_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
#: Two Crockford characters for each 10-bit value: a ULID is 13 lookups.
_PAIRS = tuple(a + b for a in _CROCKFORD for b in _CROCKFORD)


class _UlidClock:
    """Monotonic ULIDs (https://github.com/ulid/spec): 48 bits of milliseconds, then 80 bits
    that start at a random value each millisecond and count up within it, so ids sort in the
    order they were made, even within one millisecond.

    The random part comes from a generator seeded once from os.urandom: an id is unique, not
    secret (ids grant nothing; authentication is the token), and a system call per id would
    cost more than the rest of a submit's bookkeeping."""

    def __init__(self) -> None:
        self._random = random.Random(os.urandom(32))
        self._last_ms = -1
        self._last = 0

    def next(self) -> int:
        ms = time.time_ns() // 1_000_000
        if ms > self._last_ms:
            self._last_ms = ms
            self._last = ms << 80 | self._random.getrandbits(79)  # room to count up
        else:  # the same millisecond (or the clock stepped back): count up
            self._last += 1
        return self._last


_ULIDS = _UlidClock()


def encode_ulid(value: int) -> str:
    """The 26 Crockford base32 characters of a 128-bit ULID."""
    pairs = _PAIRS
    return "".join([pairs[value >> shift & 1023] for shift in range(120, -1, -10)])


def new_job_id() -> str:
    """`j_` + a 26-character ULID: sortable by creation time, unique without coordination."""
    return "j_" + encode_ulid(_ULIDS.next())


def now_timestamp() -> timestamp_pb2.Timestamp:
    seconds, nanos = divmod(time.time_ns(), 1_000_000_000)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def seconds_to_duration(seconds: float) -> duration_pb2.Duration:
    duration = duration_pb2.Duration()
    duration.FromNanoseconds(round(seconds * 1e9))
    return duration


@dataclasses.dataclass(frozen=True, kw_only=True)
class ScanSpec:
    """A validated scan request, with the server's defaults and caps applied."""

    path: str  #: resolved absolute folder
    recursive: bool
    follow_symlinks: bool
    timeout: float  #: seconds, already capped
    priority: int
    full: bool
    #: VERIFY_NONE or VERIFY_DECODE (the contract's `Verify`; never UNSPECIFIED)
    verify: int = scan_pb2.VERIFY_NONE
    request_id: str = ""
    #: Hash of what the client asked for (before defaults), to tell a retried request_id
    #: from a reused one (AIP-155).
    fingerprint: str = ""
    #: What submitted the job (the contract's `Trigger`), and the library holding the folder
    #: ("libraries/ID"; empty: none).
    trigger: int = scan_pb2.TRIGGER_USER
    library: str = ""
    #: Removals beyond the library's `removal_limit` are confirmed.
    force: bool = False
    #: A targeted rescan: the folders compared directly, and those walked whole (`path` is
    #: the library's root); both empty for a scan of `path`.
    folders: tuple[str, ...] = ()
    trees: tuple[str, ...] = ()
    #: Seconds a file must have been unchanged to be probed (0: no quiet window).
    quiet: float = 0.0
    #: The library's `extensions` (over the server's set); "": the server's set.
    extensions: str = ""

    @property
    def decode(self) -> bool:
        """True for a DECODE scan: files are verified by decoding them."""
        return self.verify == scan_pb2.VERIFY_DECODE

    @functools.cached_property
    def dedup_key(self) -> str:
        """Jobs with the same key are the same request: a submit joins an active one."""
        flags = f"{int(self.recursive)}{int(self.follow_symlinks)}{int(self.full)}"
        if self.verify == scan_pb2.VERIFY_DECODE:
            flags += "d"
        if self.force:
            flags += "f"
        if self.trigger not in (scan_pb2.TRIGGER_USER, scan_pb2.TRIGGER_UNSPECIFIED):
            flags += f"t{self.trigger}"
        if self.folders or self.trees:
            flags += f"{self.folders!r}{self.trees!r}"
        if self.extensions:
            flags += f"e{self.extensions!r}"
        return f"{flags}:{self.timeout!r}:{self.priority}:{self.path}"

    def new_job(self) -> scan_pb2.Job:
        job_id = new_job_id()
        return scan_pb2.Job(
            job_id=job_id,
            state=scan_pb2.JOB_STATE_QUEUED,
            path=self.path,
            options=scan_pb2.ScanOptions(
                recursive=self.recursive,
                follow_symlinks=self.follow_symlinks,
                timeout=seconds_to_duration(self.timeout),
                priority=self.priority,
                full=self.full,
                # Set for DECODE only: the options of other scans read as they always did.
                verify=self.verify if self.decode else 0,  # type: ignore[arg-type]
                force=self.force,
                folders=self.folders,
                trees=self.trees,
                quiet_window=seconds_to_duration(self.quiet) if self.quiet else None,
                extensions=self.extensions,
            ),
            progress=scan_pb2.Progress(),
            create_time=now_timestamp(),
            attempt=1,
            request_id=self.request_id,
            trigger=self.trigger,  # type: ignore[arg-type]
            library=self.library,
        )


def request_fingerprint(request: scan_pb2.SubmitScanRequest) -> str:
    """A stable hash of a SubmitScanRequest without its request_id."""
    copy = scan_pb2.SubmitScanRequest()
    copy.CopyFrom(request)
    copy.ClearField("request_id")
    return hashlib.sha256(copy.SerializeToString(deterministic=True)).hexdigest()[:32]


def spec_of(job: scan_pb2.Job) -> ScanSpec:
    """The spec a stored job runs with (used when jobs are recovered after a restart)."""
    return ScanSpec(
        path=job.path,
        recursive=job.options.recursive,
        follow_symlinks=job.options.follow_symlinks,
        timeout=job.options.timeout.ToNanoseconds() / 1e9,
        priority=job.options.priority,
        full=job.options.full,
        verify=job.options.verify or scan_pb2.VERIFY_NONE,
        request_id=job.request_id,
        trigger=job.trigger or scan_pb2.TRIGGER_USER,
        library=job.library,
        force=job.options.force,
        folders=tuple(job.options.folders),
        trees=tuple(job.options.trees),
        quiet=job.options.quiet_window.ToNanoseconds() / 1e9,
        extensions=job.options.extensions,
    )


#: A job's result holds at most this many of its file errors, and at most SAMPLE_BYTES of
#: them serialized: a Job message stays small whatever the paths (ListFileErrors has them all).
SAMPLE_ERRORS = 100
SAMPLE_BYTES = 64 * 1024
#: A file error's path longer than this keeps its first and last ERROR_PATH_KEEP characters;
#: its message is cut at MAX_ERROR_MESSAGE characters. So one FileError is at most about 9 KiB.
MAX_ERROR_PATH = 8192
ERROR_PATH_KEEP = 4000
MAX_ERROR_MESSAGE = 1024


def bounded_error_path(path: str) -> str:
    """`path` as a file error names it: whole, unless longer than MAX_ERROR_PATH."""
    if len(path) <= MAX_ERROR_PATH:
        return path
    return f"{path[:ERROR_PATH_KEEP]} … {path[-ERROR_PATH_KEEP:]}"


def bounded_error_message(message: str) -> str:
    if len(message) <= MAX_ERROR_MESSAGE:
        return message
    return message[: MAX_ERROR_MESSAGE - 1] + "…"


def sample_file_errors(errors: list[scan_pb2.FileError]) -> list[scan_pb2.FileError]:
    """The first errors that fit a job's result: at most SAMPLE_ERRORS and SAMPLE_BYTES."""
    sample: list[scan_pb2.FileError] = []
    size = 0
    for error in errors[:SAMPLE_ERRORS]:
        size += error.ByteSize() + 4
        if size > SAMPLE_BYTES:
            break
        sample.append(error)
    return sample
