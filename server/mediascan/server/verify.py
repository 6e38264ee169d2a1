"""DECODE verification on the server's side: a pool of prober processes of its own (so that a
long decode never holds a slot ordinary probes need), a time limit that grows with the video's
running time, and what a verification becomes in the job (a file error, as a warning) and in
the library (the video's `health`).

Decoding takes about the video's running time per core for a feature film; a decode whose job
is cancelled, or that passes its limit, is stopped by killing its prober process
(`ProbePool(kill_on_cancel=True)`). The same pool hashes whole files when ListDuplicates is
asked to confirm duplicates (`content_hash`): long reads, limited by the file's size.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import TYPE_CHECKING, Any

from mediascan.v1 import scan_pb2

from .decode_check import DecodeReport
from .errors import Code
from .probe import ProbeError
from .probe_pool import ProbePool
from .store import HealthUpdate

if TYPE_CHECKING:
    from .scanner import ScanReporter
    from .walker import FoundFile

#: Bytes per second a whole-file hash is given at least (a slow NAS), on top of the base limit.
HASH_RATE = 20 * 1024 * 1024


def _report(answer: Any) -> DecodeReport:
    return DecodeReport(**answer)


class Verifier:
    """Runs DECODE verifications and whole-file hashes in its own prober processes.

    A file's time limit is `base + ratio * duration` (seconds): `base` is the server's probe
    time limit and `ratio` its `--verify-time-ratio`."""

    def __init__(self, pool: ProbePool, *, base: float, ratio: float) -> None:
        self.pool = pool
        self._base = base
        self._ratio = ratio

    def limit(self, duration_ns: int) -> float:
        """The time limit of decoding a video this long (seconds)."""
        return self._base + self._ratio * max(0, duration_ns) / 1e9

    async def decode(self, fd: int, path: str, duration_ns: int) -> DecodeReport:
        """Decode the open file `fd`; ProbeError if it could not be decoded at all (timed out,
        crashed the prober, unreadable)."""
        report: DecodeReport = await self.pool.run(
            fd, path, "decode", _report, timeout=self.limit(duration_ns)
        )
        return report

    async def content_hash(self, fd: int, path: str, size: int) -> str:
        """The BLAKE2b-256 hash of the whole open file `fd`."""
        digest: str = await self.pool.run(
            fd, path, "hash", str, timeout=self._base + size / HASH_RATE
        )
        return digest


def health_fields(report: DecodeReport) -> dict[str, Any]:
    """The verification columns of a video row (`VideoRow`, `HealthUpdate`)."""
    return {
        "health": report.health,
        "health_errors": report.error_count,
        "health_messages": json.dumps(report.messages) if report.messages else "",
        "health_first_error_ns": report.first_error_ns,
        "verify_ns": time.time_ns(),
    }


def health_update(path: str, size: int, mtime_ns: int, report: DecodeReport) -> HealthUpdate:
    return HealthUpdate(path=path, size_bytes=size, mtime_ns=mtime_ns, **health_fields(report))


def warning(report: DecodeReport) -> tuple[Code, str] | None:
    """The file error a verification adds to its job (a warning: the video stays in the
    library), or None for a healthy file."""
    if report.health == scan_pb2.HEALTH_OK:
        return None
    where = (
        "" if report.first_error_ns < 0 else f", the first at {report.first_error_ns / 1e9:.3f}s"
    )
    first = f": {report.messages[0]}" if report.messages else ""
    if report.health == scan_pb2.HEALTH_CORRUPT:
        what = f"corrupt: decoded up to {report.decoded_ns / 1e9:.3f}s"
        return Code.DATA_LOSS, f"{what} ({report.error_count} decoding errors{where}){first}"
    return Code.DATA_LOSS, f"decoded with {report.error_count} errors{where}{first}"


def with_health(row: Any, report: DecodeReport) -> Any:
    """`row` (a VideoRow) with the verification's columns."""
    return dataclasses.replace(row, **health_fields(report))


async def verify_file(
    verifier: Verifier, found: FoundFile, duration_ns: int, reporter: ScanReporter
) -> DecodeReport | None:
    """Decode one file of a scan; its problems become a file error of the job (a warning: the
    file is not counted failed). None when it could not be verified at all (it timed out,
    crashed its prober): its health stays unknown, and the job says why."""
    try:
        report = await verifier.decode(found.fd, found.path, duration_ns)
    except ProbeError as exc:
        reporter.file_error(
            found.path, Code.DATA_LOSS, f"could not be verified by decoding: {exc.message}"
        )
        return None
    problem = warning(report)
    if problem is not None:
        reporter.file_error(found.path, *problem)
    return report
