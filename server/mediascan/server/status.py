"""The transport's one place for errors: a domain error (`errors.py`) becomes the gRPC status
of the call, with its message and rich details, and the call is aborted."""

from __future__ import annotations

import grpc
from google.rpc import code_pb2, status_pb2
from grpc_status import rpc_status

from .errors import INTERNAL_MESSAGE, Code, MediascanError, to_rpc_status
from .grpc_types import Context

_GRPC_CODES: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


def grpc_code(code: Code) -> grpc.StatusCode:
    """The gRPC status code of a domain code (the same number)."""
    return _GRPC_CODES[int(code)]


async def abort(context: Context, error: MediascanError) -> None:
    """End the call with `error`'s status, message and rich details."""
    status = rpc_status.to_status(to_rpc_status(error))
    await context.abort(status.code, status.details, status.trailing_metadata)


async def abort_internal(context: Context) -> None:
    status = rpc_status.to_status(
        status_pb2.Status(code=code_pb2.INTERNAL, message=INTERNAL_MESSAGE)
    )
    await context.abort(status.code, status.details, status.trailing_metadata)
