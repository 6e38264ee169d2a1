"""Which file names a scan considers videos: the default extensions, `--extensions` (which
replaces the set, or extends it with `+`), and the check of one name."""

from __future__ import annotations

import re

#: File name extensions (lower case, without the dot) that a scan considers videos by default.
VIDEO_EXTENSIONS: frozenset[str] = frozenset(
    {
        "mp4",
        "m4v",
        "mkv",
        "webm",
        "mov",
        "avi",
        "mpg",
        "mpeg",
        "ts",
        "m2ts",
        "mts",
        "m2t",
        "vob",
        "mxf",
        "asf",
        "wmv",
        "m2v",
        "flv",
        "f4v",
        "divx",
        "3gp",
        "ogv",
        "ogm",
        "rm",
        "rmvb",
    }
)

#: ".mp4", ...: `name[name.rfind("."):].lower() in suffixes` tells a video name in one slice
#: (without a dot, the slice is the name's last character, never a suffix).
VIDEO_SUFFIXES: frozenset[str] = frozenset("." + extension for extension in VIDEO_EXTENSIONS)

_EXTENSION = re.compile(r"[a-z0-9][a-z0-9_-]{0,15}")


def parse_extensions(text: str, base: frozenset[str] = VIDEO_SUFFIXES) -> frozenset[str]:
    """The suffixes (".mp4", ...) `text` names (`--extensions`, a library's `extensions`): ""
    is `base` (the default set; for a library, the server's); "mp4,mkv" replaces it; "+vid,+dv"
    adds to it (every item with "+", or none). Case and a leading dot do not matter. ValueError
    says what is wrong."""
    items = [item.strip() for item in text.split(",") if item.strip()]
    if not items:
        return base
    adding = [item.startswith("+") for item in items]
    if any(adding) and not all(adding):
        raise ValueError(
            f"mixes added and replacing extensions ({text!r}): prefix every one with + to add "
            "to the set, or none to replace it"
        )
    names = {item.lstrip("+").lstrip(".").lower() for item in items}
    bad = sorted(name for name in names if not _EXTENSION.fullmatch(name))
    if bad:
        raise ValueError(
            f"{', '.join(map(repr, bad))} is not a file name extension (letters and digits, "
            "e.g. mp4 or .mkv)"
        )
    chosen = {"." + name for name in names}
    return base | chosen if all(adding) else frozenset(chosen)


def is_video_name(name: str, suffixes: frozenset[str] = VIDEO_SUFFIXES) -> bool:
    dot = name.rfind(".")
    return dot >= 0 and name[dot:].lower() in suffixes
