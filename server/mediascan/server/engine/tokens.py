"""Page tokens (AIP-158), in one place: each is URL-safe base64 of a small JSON object that
names where the next page starts and what listing it belongs to. A token this server did not
issue, or one of another listing, is INVALID_ARGUMENT on `page_token`."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from mediascan.v1 import scan_pb2

from ..errors import InvalidArgument

#: What the order of a ListVideos token looks like ("duration desc").
_ORDER = re.compile(r"[a-z_]{1,20}( desc)?")


def _encode(data: dict[str, Any]) -> str:
    raw = json.dumps(data, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode(token: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


def _not_ours(method: str) -> InvalidArgument:
    return InvalidArgument(
        "page_token",
        "not a token this server issued: pass the next_page_token of the previous "
        f"{method} response unchanged, or leave it empty for the first page",
    )


def encode_jobs_token(last: scan_pb2.Job, state: int) -> str:
    return _encode({"c": last.create_time.ToNanoseconds(), "j": last.job_id, "s": state})


def decode_jobs_token(token: str, state: int) -> tuple[int, str] | None:
    """(create_ns, job_id) of the previous page's last job, or None for the first page."""
    if not token:
        return None
    try:
        data = _decode(token)
        create_ns, job_id, token_state = int(data["c"]), str(data["j"]), int(data["s"])
        if not 0 <= create_ns < 2**63:
            raise ValueError("out of range")
        job_id.encode("utf-8")  # a lone surrogate from a forged token: not ours
    except (ValueError, TypeError, KeyError, OverflowError):
        raise _not_ours("ListJobs") from None
    if token_state != state:
        raise InvalidArgument(
            "page_token", "the token belongs to a listing with another state filter"
        )
    return create_ns, job_id


def encode_errors_token(job_id: str, last_seq: int) -> str:
    return _encode({"j": job_id, "n": last_seq})


def decode_errors_token(token: str, job_id: str) -> int:
    """The seq after which the page starts (-1: the first page)."""
    if not token:
        return -1
    try:
        data = _decode(token)
        token_job, last_seq = str(data["j"]), int(data["n"])
        if not 0 <= last_seq < 2**62:
            raise ValueError("out of range")
    except (ValueError, TypeError, KeyError, OverflowError):
        raise _not_ours("ListFileErrors") from None
    if token_job != job_id:
        raise InvalidArgument("page_token", "the token belongs to another job's file errors")
    return last_seq


def encode_videos_token(last: str | tuple[int, int], filters: str, order: str) -> str:
    """A ListVideos token: where the next page starts (`last`: the last video's path in path
    order, else its sort key and id), the filters' digest and the order ("duration desc"; left
    out for path order, so that those tokens stay as they were)."""
    if isinstance(last, str):
        data: dict[str, Any] = {"p": last, "f": filters}
    else:
        data = {"k": last[0], "i": last[1], "f": filters}
    if order != "path":
        data["o"] = order
    return _encode(data)


def decode_videos_token(token: str, filters: str, order: str) -> str | tuple[int, int] | None:
    """Where the page starts: the previous page's last path (path order) or (sort key, id)
    (other orders); None for the first page."""
    if not token:
        return None
    try:
        data = _decode(token)
        token_filters, token_order = str(data["f"]), str(data.get("o", "path"))
        if not _ORDER.fullmatch(token_order):  # shown in the error below: only a real order
            raise ValueError("not an order")
    except (ValueError, TypeError, KeyError, AttributeError):
        raise _not_ours("ListVideos") from None
    if token_order != order:
        raise InvalidArgument(
            "page_token",
            f'the token belongs to a listing in another order ("{token_order}", not '
            f'"{order}"): keep order_by the same, or leave page_token empty to start over',
        )
    if token_filters != filters:
        raise InvalidArgument(
            "page_token", "the token belongs to a listing with other filters: keep them the same"
        )
    try:
        if order.split()[0] == "path":
            path = str(data["p"])
            path.encode("utf-8")  # a lone surrogate from a forged token: not ours
            return path
        key, video_id = int(data["k"]), int(data["i"])
        if not (-(2**63) <= key < 2**63 and 0 < video_id < 2**63):
            raise ValueError("out of range")
        return key, video_id
    except (ValueError, TypeError, KeyError, OverflowError):
        raise _not_ours("ListVideos") from None


def encode_duplicates_token(last_fingerprint: str, prefix: str) -> str:
    return _encode({"d": last_fingerprint, "p": prefix})


def decode_duplicates_token(token: str, prefix: str) -> str | None:
    """The fingerprint after which the page starts, or None for the first page."""
    if not token:
        return None
    try:
        data = _decode(token)
        fingerprint, token_prefix = str(data["d"]), str(data["p"])
        fingerprint.encode("ascii")
    except (ValueError, TypeError, KeyError):
        raise _not_ours("ListDuplicates") from None
    if token_prefix != prefix:
        raise InvalidArgument(
            "page_token", "the token belongs to a listing of another path_prefix: keep it the same"
        )
    return fingerprint


def encode_libraries_token(last_id: str) -> str:
    return _encode({"l": last_id})


def decode_libraries_token(token: str) -> str:
    """The id of the previous page's last library, or "" for the first page."""
    if not token:
        return ""
    try:
        last = _decode(token)["l"]
        if not isinstance(last, str):
            raise TypeError("not a library id")
        last.encode("utf-8")
    except (ValueError, TypeError, KeyError):
        raise _not_ours("ListLibraries") from None
    return last
