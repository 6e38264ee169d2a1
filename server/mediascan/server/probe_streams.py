"""A file's streams, chapters and tags as the contract describes them, and which streams are
the main video and the main audio (`main_video`, `main_audio`). Runs in the prober processes.

A `Video` stays small whatever the file holds: at most MAX_STREAMS streams and MAX_CHAPTERS
chapters, texts cut to their bounds (at a character boundary); `metadata_cut` says when
anything was left out, `stream_count` and `chapter_count` how much there was."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

import av

from mediascan.v1 import scan_pb2

MAX_STREAMS = 32
MAX_CHAPTERS = 64
#: Bytes of a container's title, encoder or timecode tag, at most.
MAX_TAG_BYTES = 256
#: Bytes of a stream's or a chapter's title (and a stream's profile), at most.
MAX_TITLE_BYTES = 128
#: Bytes of a stream's codec, language and channel layout names, at most (FFmpeg's own names
#: are shorter; a custom channel layout lists its channels).
MAX_NAME_BYTES = 64

_KINDS = {
    "video": scan_pb2.STREAM_KIND_VIDEO,
    "audio": scan_pb2.STREAM_KIND_AUDIO,
    "subtitle": scan_pb2.STREAM_KIND_SUBTITLE,
    "data": scan_pb2.STREAM_KIND_DATA,
    "attachment": scan_pb2.STREAM_KIND_ATTACHMENT,
}
#: AVFMT_NOTIMESTAMPS: the format carries no timestamps (raw elementary streams).
NO_TIMESTAMPS = 0x0080
_DEFAULT = int(av.stream.Disposition.default)
_FORCED = int(av.stream.Disposition.forced)
#: Cover art, a thumbnail track, a still image: pictures, not the video.
_PICTURE = int(
    av.stream.Disposition.attached_pic
    | av.stream.Disposition.timed_thumbnails
    | av.stream.Disposition.still_image
)

#: Codecs of still pictures: a track of them beside a larger video of another codec is a
#: thumbnail or a preview (Motion JPEG alone is still a video).
_PICTURE_CODECS = frozenset({"mjpeg", "png", "bmp", "webp", "tiff", "jpeg2000", "qoi"})


def codec_name(stream: Any) -> str:
    context = stream.codec_context
    if context is None:
        return ""
    codec = context.codec
    return str(getattr(codec, "canonical_name", None) or context.name or "")


def is_picture(stream: Any) -> bool:
    return bool(_disposition(stream) & _PICTURE)


def main_video(container: Any) -> Any | None:
    """The video stream that is the video. Not a cover picture nor a thumbnail track, nor a
    preview: a stream another outdoes in both frame count and area, or, where the file does not
    count frames, in area while it is coded as still pictures (a camera's one-frame thumbnail
    track comes first and is often the one marked default). Of
    the rest, those with the default disposition (all when none has it); of those, the one with
    the most frames, then the largest area, then the first."""
    videos = [s for s in container.streams.video if not is_picture(s)]
    videos = [s for s in videos if not any(_outdoes(other, s) for other in videos)]
    pool = [s for s in videos if _disposition(s) & _DEFAULT] or videos
    if not pool:
        return None
    return max(pool, key=lambda s: (int(s.frames or 0), _area(s), -s.index))


def _outdoes(one: Any, other: Any) -> bool:
    """`one` is the video and `other` a thumbnail or preview beside it: `one` is larger, and
    has more frames; or, where the file does not count frames (Matroska), `other` is coded
    as still pictures and `one` is not."""
    if _area(one) <= _area(other):
        return False
    frames, others = int(one.frames or 0), int(other.frames or 0)
    if frames and others:
        return frames > others
    return codec_name(other) in _PICTURE_CODECS and codec_name(one) not in _PICTURE_CODECS


def main_audio(container: Any) -> Any | None:
    """The first audio stream with the default disposition, else the first."""
    audios = list(container.streams.audio)
    defaults = [s for s in audios if _disposition(s) & _DEFAULT]
    return (defaults or audios or [None])[0]


def frame_rate(stream: Any) -> Fraction | None:
    """A video stream's average frame rate (ffprobe's avg_frame_rate). A raw elementary stream
    has no timestamps to average: FFmpeg 8's raw demuxers report their 25 fps default there,
    while the stream's own header (an MPEG-2 sequence header, an H.264 VUI) states the rate,
    which ffprobe 5.1 reports and the decoder reads."""
    rate: Fraction | None = stream.average_rate
    if int(stream.container.format.flags or 0) & NO_TIMESTAMPS:
        rate = stream.codec_context.framerate or stream.guessed_rate or rate
    return rate


def channels(stream: Any) -> int:
    context = stream.codec_context
    layout = getattr(context, "layout", None)
    if layout is not None and getattr(layout, "nb_channels", None):
        return int(layout.nb_channels)
    return int(getattr(context, "channels", 0) or 0)


def describe(container: Any, out: scan_pb2.Video) -> None:
    """Fill the streams, chapters and tags of `out`."""
    streams = list(container.streams)
    out.stream_count = len(streams)
    cut = len(streams) > MAX_STREAMS
    for stream in streams[:MAX_STREAMS]:
        cut = _add_stream(stream, out.streams.add()) or cut
    cut = _add_chapters(_chapters(container), out) or cut
    tags = _lower(container.metadata)
    out.title, title_cut = bounded(tags.get("title", ""), MAX_TAG_BYTES)
    out.encoder, encoder_cut = bounded(tags.get("encoder", ""), MAX_TAG_BYTES)
    created = _timestamp(tags.get("creation_time", ""))
    if created is not None:
        out.creation_time.FromDatetime(created)
    timecode = tags.get("timecode", "") or next(
        (t for s in streams if (t := _lower(s.metadata).get("timecode", ""))), ""
    )
    out.timecode, timecode_cut = bounded(timecode, MAX_TAG_BYTES)
    out.metadata_cut = cut or title_cut or encoder_cut or timecode_cut


def _add_stream(stream: Any, out: scan_pb2.Stream) -> bool:
    """Describe `stream` in `out`; True when its title was cut."""
    tags = _lower(stream.metadata)
    disposition = _disposition(stream)
    out.index = int(stream.index)
    out.kind = _KINDS.get(str(stream.type), scan_pb2.STREAM_KIND_UNSPECIFIED)
    out.codec, _ = bounded(codec_name(stream), MAX_NAME_BYTES)
    out.profile, _ = bounded(str(getattr(stream, "profile", None) or ""), MAX_TITLE_BYTES)
    language = str(getattr(stream, "language", None) or tags.get("language", "") or "")
    out.language, _ = bounded("" if language == "und" else language, MAX_NAME_BYTES)
    out.title, cut = bounded(tags.get("title", ""), MAX_TITLE_BYTES)
    out.default = bool(disposition & _DEFAULT)
    out.forced = bool(disposition & _FORCED)
    out.attached_picture = bool(disposition & _PICTURE)
    context = stream.codec_context
    if context is not None:
        out.bit_rate = int(context.bit_rate or 0)
    if stream.type == "audio":
        out.channels = channels(stream)
        layout = getattr(context, "layout", None)
        out.channel_layout, _ = bounded(str(getattr(layout, "name", "") or ""), MAX_NAME_BYTES)
        out.sample_rate = int(context.sample_rate or 0)
    elif stream.type == "video":
        out.width = int(context.width or 0)
        out.height = int(context.height or 0)
        rate = frame_rate(stream)
        out.frame_rate = float(rate) if rate else 0.0
    return cut


def _chapters(container: Any) -> Sequence[dict[str, Any]]:
    try:
        return list(container.chapters())
    except (AttributeError, av.error.FFmpegError, ValueError):
        return []


def _add_chapters(chapters: Sequence[dict[str, Any]], out: scan_pb2.Video) -> bool:
    """Add up to MAX_CHAPTERS chapters to `out`; True when any was left out or cut."""
    out.chapter_count = len(chapters)
    cut = len(chapters) > MAX_CHAPTERS
    for chapter in chapters[:MAX_CHAPTERS]:
        added = out.chapters.add()
        base = chapter.get("time_base")
        if base:
            added.start.FromNanoseconds(int(chapter["start"] * base * 1_000_000_000))
            added.end.FromNanoseconds(int(chapter["end"] * base * 1_000_000_000))
        title = _lower(chapter.get("metadata") or {}).get("title", "")
        added.title, title_cut = bounded(title, MAX_TITLE_BYTES)
        cut = cut or title_cut
    return cut


def bounded(text: str, limit: int) -> tuple[str, bool]:
    """`text` cut to at most `limit` UTF-8 bytes at a character boundary, and whether it was."""
    data = text.encode("utf-8", "replace")
    if len(data) <= limit:
        return text, False
    return data[:limit].decode("utf-8", "ignore"), True


def _timestamp(text: str) -> datetime.datetime | None:
    """An ISO 8601 creation_time tag as an aware datetime (UTC when it names no zone)."""
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    if when.year <= 1904:  # QuickTime's zero time, not a date
        return None
    return when


def _lower(tags: Any) -> dict[str, str]:
    return {str(k).lower(): str(v) for k, v in dict(tags or {}).items()}


def _disposition(stream: Any) -> int:
    return int(getattr(stream, "disposition", 0) or 0)


def _area(stream: Any) -> int:
    context = stream.codec_context
    return int(context.width or 0) * int(context.height or 0)
