"""Domain errors with their status codes and rich details (AIP-193), free of any transport.

The engine, the store and the handlers raise these; `status.py`, the transport's one place,
turns them into gRPC statuses and aborts the call. The codes are `Code`, an `IntEnum` with the
numbers of `google.rpc.Code` (the same numbers gRPC uses), so nothing here imports gRPC.
"""

from __future__ import annotations

import enum
from typing import Any, Protocol

from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2

ERROR_DOMAIN = "mediascan.dev"


class Code(enum.IntEnum):
    """A status code: the numbers of `google.rpc.Code` (and of `grpc.StatusCode`)."""

    OK = code_pb2.OK
    CANCELLED = code_pb2.CANCELLED
    UNKNOWN = code_pb2.UNKNOWN
    INVALID_ARGUMENT = code_pb2.INVALID_ARGUMENT
    DEADLINE_EXCEEDED = code_pb2.DEADLINE_EXCEEDED
    NOT_FOUND = code_pb2.NOT_FOUND
    ALREADY_EXISTS = code_pb2.ALREADY_EXISTS
    PERMISSION_DENIED = code_pb2.PERMISSION_DENIED
    RESOURCE_EXHAUSTED = code_pb2.RESOURCE_EXHAUSTED
    FAILED_PRECONDITION = code_pb2.FAILED_PRECONDITION
    ABORTED = code_pb2.ABORTED
    OUT_OF_RANGE = code_pb2.OUT_OF_RANGE
    UNIMPLEMENTED = code_pb2.UNIMPLEMENTED
    INTERNAL = code_pb2.INTERNAL
    UNAVAILABLE = code_pb2.UNAVAILABLE
    DATA_LOSS = code_pb2.DATA_LOSS
    UNAUTHENTICATED = code_pb2.UNAUTHENTICATED


class TransportCode(Protocol):
    """A transport's own code enum whose value starts with the number (`grpc.StatusCode`:
    `(3, "invalid argument")`), accepted where a `Code` is, so that callers still passing
    one keep working."""

    @property
    def value(self) -> Any: ...


#: What `status_of` and the file-error reporters accept as a code.
CodeLike = Code | int | TransportCode


def code_number(code: CodeLike) -> int:
    """The number of `code`: a `Code` or int as it is, a transport enum by its value's first
    element."""
    if isinstance(code, int):
        return int(code)
    value = code.value
    return int(value[0] if isinstance(value, tuple) else value)


class MediascanError(Exception):
    """An expected error: the caller's request cannot be served as asked (the caller's fault, or
    a state of the server the caller must wait out). Carries its gRPC status code.

    `field` names the request field at fault (sent as a BadRequest field violation, so programs
    can point at it whatever the code), `reason` a stable UPPER_SNAKE code for programs (sent as
    an ErrorInfo in the mediascan.dev domain)."""

    code: Code = Code.UNKNOWN

    def __init__(self, message: str, *, field: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.field = field
        self.reason = reason

    def details(self) -> list[any_pb2.Any]:
        """Rich error details to attach (google.rpc.* messages packed in Any)."""
        found: list[any_pb2.Any] = []
        if self.field:
            found.append(_pack(_bad_request(self.field, self.message)))
        if self.reason:
            found.append(
                _pack(error_details_pb2.ErrorInfo(reason=self.reason, domain=ERROR_DOMAIN))
            )
        return found


def _pack(message: Any) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def _bad_request(field: str, description: str) -> Any:
    return error_details_pb2.BadRequest(
        field_violations=[
            error_details_pb2.BadRequest.FieldViolation(field=field, description=description)
        ]
    )


class InvalidArgument(MediascanError):
    """A request field is invalid; `field` names it, `description` says how to fix it."""

    code = Code.INVALID_ARGUMENT

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description

    def details(self) -> list[any_pb2.Any]:
        return [_pack(_bad_request(self.field, self.description))]


class MalformedRequest(MediascanError):
    """The request's bytes do not parse as the method's request message."""

    code = Code.INVALID_ARGUMENT


class NotFound(MediascanError):
    """The named job, video or path does not exist."""

    code = Code.NOT_FOUND


class FailedPrecondition(MediascanError):
    """The request is valid but the target is in the wrong state (e.g. a file, not a folder)."""

    code = Code.FAILED_PRECONDITION


class PermissionDenied(MediascanError):
    """The path lies outside the server's allowed roots."""

    code = Code.PERMISSION_DENIED


class ResourceExhausted(MediascanError):
    """The queue is full (or the stream buffer budget used up); the caller should retry after
    `retry_after` seconds."""

    code = Code.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after: float, *, reason: str = "QUEUE_FULL") -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after

    def details(self) -> list[any_pb2.Any]:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(max(1, round(self.retry_after * 1000)))
        return [_pack(error_details_pb2.RetryInfo(retry_delay=delay)), *super().details()]


class Unavailable(MediascanError):
    """The server is shutting down or its storage is failing; retry, maybe elsewhere."""

    code = Code.UNAVAILABLE


class Aborted(MediascanError):
    """A concurrent change won a race (e.g. the job finished while being cancelled)."""

    code = Code.ABORTED


def job_not_found(job_id: str) -> NotFound:
    return NotFound(
        f'job "{job_id}" does not exist (it may have been deleted or purged)',
        field="job_id",
        reason="JOB_NOT_FOUND",
    )


def to_rpc_status(error: MediascanError) -> status_pb2.Status:
    """The google.rpc.Status that describes `error` (also stored in jobs' `error` field)."""
    return status_pb2.Status(code=int(error.code), message=error.message, details=error.details())


def status_of(code: CodeLike, message: str) -> status_pb2.Status:
    """A bare google.rpc.Status (no details) for `code` and `message`."""
    return status_pb2.Status(code=code_number(code), message=message)


INTERNAL_MESSAGE = "internal error: the server logged the details; please report it"


class AlreadyExists(MediascanError):
    """The resource a create names exists already."""

    code = Code.ALREADY_EXISTS


class Unimplemented(MediascanError):
    """The server cannot do what was asked (e.g. its store keeps no libraries)."""

    code = Code.UNIMPLEMENTED
