"""The one error type the client raises for a failed call, with the server's rich details."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import grpc
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped]

#: The trailing metadata key that carries a serialized `google.rpc.Status` (AIP-193).
STATUS_DETAILS_KEY = "grpc-status-details-bin"


class MediascanError(Exception):
    """A call to the mediascan server failed with a gRPC status other than OK.

    An expected outcome, not a bug in the caller's code: the server refused the request (bad
    argument, unknown job, queue full, ...) or could not be reached. The original
    `grpc.aio.AioRpcError` is kept as `__cause__`.

    A client of several servers tries the next one when a server cannot be reached; when none
    answers, the error raised is the last server's, and `earlier` holds the others'.
    """

    def __init__(
        self,
        code: grpc.StatusCode,
        message: str,
        *,
        field_violations: Iterable[tuple[str, str]] = (),
        retry_delay: float | None = None,
        target: str | None = None,
        unreachable: bool = False,
        earlier: Iterable[MediascanError] = (),
    ) -> None:
        super().__init__(f"{code.name}: {message}")
        #: The gRPC status code.
        self.code = code
        #: The server's message (the status details string).
        self.message = message
        #: `(field, description)` pairs from a `google.rpc.BadRequest` detail.
        self.field_violations: list[tuple[str, str]] = list(field_violations)
        #: Seconds to wait before retrying, from a `google.rpc.RetryInfo` detail.
        self.retry_delay = retry_delay
        #: The address of the server that answered, or that could not be reached (None: unknown).
        self.target = target
        #: True when no connection to `target` could be made (nothing listening, a TLS
        #: mismatch, an unknown host, ...), rather than the server answering with an error.
        self.unreachable = unreachable
        #: The errors of the other servers the same call tried before this one, in order.
        self.earlier: tuple[MediascanError, ...] = tuple(earlier)

    @classmethod
    def from_rpc_error(
        cls, error: grpc.RpcError, *, target: str | None = None, unreachable: bool = False
    ) -> MediascanError:
        """Build the error from a failed call, parsing `grpc-status-details-bin` if present.

        Raise the result `from error` to keep the original as `__cause__`.
        """
        code = error.code()
        message = error.details() or ""
        violations: list[tuple[str, str]] = []
        retry_delay: float | None = None
        # grpc-stubs types the metadata of the synchronous API; grpc.aio gives a Metadata object.
        # Both iterate as (key, value) pairs.
        metadata = cast("Iterable[tuple[str, str | bytes]] | None", error.trailing_metadata())
        status = _status_from_metadata(metadata)
        if status is not None:
            message = message or status.message
            for detail in status.details:
                if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                    bad_request = error_details_pb2.BadRequest()
                    detail.Unpack(bad_request)
                    violations.extend(
                        (violation.field, violation.description)
                        for violation in bad_request.field_violations
                    )
                elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    retry_info = error_details_pb2.RetryInfo()
                    detail.Unpack(retry_info)
                    retry_delay = retry_info.retry_delay.ToTimedelta().total_seconds()
        return cls(
            code,
            message,
            field_violations=violations,
            retry_delay=retry_delay,
            target=target,
            unreachable=unreachable,
        )


def _status_from_metadata(
    metadata: Iterable[tuple[str, str | bytes]] | None,
) -> status_pb2.Status | None:
    """The `google.rpc.Status` in trailing metadata, or None (absent or unreadable)."""
    for key, value in metadata or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status = status_pb2.Status()
            try:
                status.ParseFromString(value)
            except DecodeError:  # a malformed trailer must not hide the real error
                return None
            return status
    return None
