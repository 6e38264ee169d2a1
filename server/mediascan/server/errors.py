"""Domain errors, and the one place that turns them into gRPC statuses (AIP-193).

Handlers and the layers below them raise these; `service.py` catches them at the edge and calls
`abort()`. Anything else that escapes a handler is a bug: it is logged with its traceback and the
caller gets INTERNAL with a message that leaks nothing.
"""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from .grpc_types import Context

ERROR_DOMAIN = "mediascan.dev"


class MediascanError(Exception):
    """An expected error: the caller's request cannot be served as asked (the caller's fault, or
    a state of the server the caller must wait out). Carries its gRPC status code.

    `field` names the request field at fault (sent as a BadRequest field violation, so programs
    can point at it whatever the code), `reason` a stable UPPER_SNAKE code for programs (sent as
    an ErrorInfo in the mediascan.dev domain)."""

    code: grpc.StatusCode = grpc.StatusCode.UNKNOWN

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

    code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(self, field: str, description: str) -> None:
        super().__init__(f"{field}: {description}")
        self.field = field
        self.description = description

    def details(self) -> list[any_pb2.Any]:
        return [_pack(_bad_request(self.field, self.description))]


class MalformedRequest(MediascanError):
    """The request's bytes do not parse as the method's request message."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(MediascanError):
    """The named job, video or path does not exist."""

    code = grpc.StatusCode.NOT_FOUND


class FailedPrecondition(MediascanError):
    """The request is valid but the target is in the wrong state (e.g. a file, not a folder)."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class PermissionDenied(MediascanError):
    """The path lies outside the server's allowed roots."""

    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(MediascanError):
    """The queue is full (or the stream buffer budget used up); the caller should retry after
    `retry_after` seconds."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after: float, *, reason: str = "QUEUE_FULL") -> None:
        super().__init__(message, reason=reason)
        self.retry_after = retry_after

    def details(self) -> list[any_pb2.Any]:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(max(1, round(self.retry_after * 1000)))
        return [_pack(error_details_pb2.RetryInfo(retry_delay=delay)), *super().details()]


class Unavailable(MediascanError):
    """The server is shutting down or its storage is failing; retry, maybe elsewhere."""

    code = grpc.StatusCode.UNAVAILABLE


class Aborted(MediascanError):
    """A concurrent change won a race (e.g. the job finished while being cancelled)."""

    code = grpc.StatusCode.ABORTED


def job_not_found(job_id: str) -> NotFound:
    return NotFound(
        f'job "{job_id}" does not exist (it may have been deleted or purged)',
        field="job_id",
        reason="JOB_NOT_FOUND",
    )


def to_rpc_status(error: MediascanError) -> status_pb2.Status:
    """The google.rpc.Status that describes `error` (also stored in jobs' `error` field)."""
    return status_pb2.Status(
        code=error.code.value[0], message=error.message, details=error.details()
    )


def status_of(code: grpc.StatusCode, message: str) -> status_pb2.Status:
    """A bare google.rpc.Status (no details) for `code` and `message`."""
    return status_pb2.Status(code=code.value[0], message=message)


INTERNAL_MESSAGE = "internal error: the server logged the details; please report it"


async def abort(context: Context, error: MediascanError) -> None:
    """End the call with `error`'s status, message and rich details."""
    status = rpc_status.to_status(to_rpc_status(error))
    await context.abort(status.code, status.details, status.trailing_metadata)


async def abort_internal(context: Context) -> None:
    status = rpc_status.to_status(
        status_pb2.Status(code=code_pb2.INTERNAL, message=INTERNAL_MESSAGE)
    )
    await context.abort(status.code, status.details, status.trailing_metadata)
