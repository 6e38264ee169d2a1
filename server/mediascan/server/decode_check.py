"""DECODE verification of one file, run in a prober process: decode every frame of the main
video and audio streams and count the decoding errors, as `ffmpeg -v error -i FILE -f null -`
reports them (one per error message the decoders log, one per packet they refuse).

A file that decodes to its end is OK without errors and WARNINGS with some. It is CORRUPT when
its demuxing stops on an error, when its main video stream yields no frame, or when its packets
end well before the duration its header claims (less than `COMPLETE` of it, and more than
`SLACK_NS` short: a truncated copy). The position of the first error is the media time of the
packet being decoded when it was met. FFmpeg folds a message repeated at once into one ending
in "(repeated N more times)": it counts N + 1.
Memory stays bounded whatever the file holds: the captured log is emptied after each packet,
and only the count and the first messages are kept. The time limit (scaled with the video's
duration) and cancellation are the pool's: it kills the prober.
"""

from __future__ import annotations

import dataclasses
import os
import re

import av

from .probe_streams import main_audio, main_video

#: The contract's `Health` values (a prober does not load the generated code).
OK = 1
WARNINGS = 2
CORRUPT = 3
#: The share of the header's duration the packets must reach, and the shortfall that is
#: always tolerated (timestamps of the last packets, audio ending before the video).
COMPLETE = 0.9
SLACK_NS = 500_000_000
#: Error messages kept per file, and their length at most.
MAX_MESSAGES = 5
MAX_MESSAGE = 200


_REPEATED = re.compile(r"\(repeated (\d+) more times?\)\s*$")


@dataclasses.dataclass(frozen=True, kw_only=True)
class DecodeReport:
    """What decoding one file found."""

    health: int
    error_count: int
    messages: list[str]
    first_error_ns: int  #: -1 without errors
    decoded_ns: int  #: media time reached by the decode


class _Tally:
    """The errors met so far: a count, the first messages, where the first one was."""

    def __init__(self) -> None:
        self.count = 0
        self.messages: list[str] = []
        self.first_ns = -1

    def add(self, message: str, at_ns: int) -> None:
        match = _REPEATED.search(message)
        self.count += 1 + (int(match.group(1)) if match else 0)
        if self.first_ns < 0:
            self.first_ns = max(0, at_ns)
        if len(self.messages) < MAX_MESSAGES:
            text = " ".join(message.split())
            self.messages.append(
                text if len(text) <= MAX_MESSAGE else text[: MAX_MESSAGE - 1] + "…"
            )


def decode_descriptor(fd: int) -> DecodeReport:
    """Decode the open file `fd` (through `/proc/self/fd`, the very file opened)."""
    if os.fstat(fd).st_nlink == 0:
        raise FileNotFoundError("the file vanished before it could be verified")
    return decode_file(f"/proc/self/fd/{fd}")


def decode_file(path: str) -> DecodeReport:
    tally = _Tally()
    previous = av.logging.get_level()
    av.logging.set_level(av.logging.ERROR)
    try:
        with av.logging.Capture(local=False) as logs:
            complete, frames, reached, claimed = _decode(path, tally, logs)
    finally:
        av.logging.set_level(previous)
    health = OK if not tally.count else WARNINGS
    short = claimed - reached > SLACK_NS and reached < COMPLETE * claimed
    if not complete or frames == 0 or short:
        health = CORRUPT
    return DecodeReport(
        health=health,
        error_count=tally.count,
        messages=tally.messages,
        first_error_ns=tally.first_ns,
        decoded_ns=reached,
    )


def _decode(
    path: str, tally: _Tally, logs: list[tuple[int, str, str]]
) -> tuple[bool, int, int, int]:
    """Decode the main streams: (reached the end of the file, video frames decoded, media time
    reached, duration the header claims (0: none))."""
    frames = reached = 0
    try:
        container = av.open(path, mode="r", metadata_errors="ignore")
    except av.error.FFmpegError as exc:
        tally.add(f"cannot open: {exc}", 0)
        return False, 0, 0, 0
    with container:
        claimed = max(0, int(container.duration or 0) * 1000)  # microseconds
        video = main_video(container)  # the probe's choice: never a thumbnail track
        if video is None:
            tally.add("no video stream", 0)
            return False, 0, 0, claimed
        video.codec_context.thread_type = "AUTO"
        audio = main_audio(container)
        streams = [video] if audio is None else [video, audio]
        packets = container.demux(streams)
        while True:
            try:
                packet = next(packets)
            except StopIteration:
                return True, frames, reached, claimed
            except av.error.FFmpegError as exc:
                tally.add(f"demuxing stopped: {exc}", reached)
                return False, frames, reached, claimed
            if packet.pts is not None and packet.time_base is not None:
                reached = max(reached, int(packet.pts * packet.time_base * 1_000_000_000))
            try:
                decoded = packet.decode()
            except av.error.FFmpegError as exc:
                decoded = []
                _drain(logs, tally, reached)
                tally.add(f"[{packet.stream.codec_context.name}] {_reason(exc)}", reached)
            _drain(logs, tally, reached)
            if packet.stream.index == video.index:
                frames += len(decoded)


def _drain(logs: list[tuple[int, str, str]], tally: _Tally, at_ns: int) -> None:
    for _, name, message in logs:
        tally.add(f"[{name}] {message}", at_ns)
    logs.clear()


def _reason(exc: av.error.FFmpegError) -> str:
    return str(getattr(exc, "strerror", None) or exc)
