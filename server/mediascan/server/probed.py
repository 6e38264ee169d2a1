"""What a probe found in one file (`ProbeResult`): made in the prober processes, carried to the
server as a JSON line, stored as a library row. No PyAV here: the store and the scanner import it.

The fields a query filters or sorts on are plain values (columns of the library); everything
else a probe reads (streams, chapters, colour, tags, ...) travels and is stored as `details`, a
serialized `Video` message holding only those fields."""

from __future__ import annotations

import base64
import dataclasses
from typing import Any

#: The version of what a probe reads. A row written by an older prober is probed again by a
#: plain rescan (`LibraryStore.library_index` leaves its key out), so that new fields fill in.
#: 1: the fields of the first library; 2: durations from packets, truncation, variable frame
#: rate, the main streams, rotation, colour and HDR, every stream, chapters and tags.
PROBER_VERSION = 2


@dataclasses.dataclass(frozen=True, kw_only=True)
class ProbeResult:
    """What a probe found in one file."""

    container: str
    duration_ns: int
    bit_rate: int
    video_codec: str
    width: int
    height: int
    frame_rate: float
    audio_codec: str
    audio_channels: int
    audio_sample_rate: int
    audio_streams: int
    #: `scan_pb2.DurationSource` of `duration_ns` (0: not recorded, an older prober).
    duration_source: int = 0
    #: The header claims more than the file holds; `duration_ns` is what plays.
    truncated: bool = False
    variable_frame_rate: bool = False
    #: Degrees, counterclockwise, from the display matrix (ffprobe's side data `rotation`).
    rotation: int = 0
    #: `scan_pb2.HdrKind` (0: not known, an older prober).
    hdr: int = 0
    prober_version: int = PROBER_VERSION
    #: A serialized `Video` holding the fields that are not columns (empty: none).
    details: bytes = b""
    #: The content fingerprint, "SIZE-HASH" (`fingerprint.py`), read from the same descriptor;
    #: "" for a row stored before fingerprints.
    fingerprint: str = ""


def result_to_json(result: ProbeResult) -> dict[str, Any]:
    """`result` as JSON values (the prober's answer line)."""
    fields = dataclasses.asdict(result)
    fields["details"] = base64.b64encode(result.details).decode("ascii")
    return fields


def result_from_json(fields: dict[str, Any]) -> ProbeResult:
    """The inverse of `result_to_json`."""
    details = base64.b64decode(fields.pop("details", ""))
    return ProbeResult(**fields, details=details)
