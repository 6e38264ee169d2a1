"""Requests that do not parse get INVALID_ARGUMENT, not UNKNOWN.

grpc.aio parses a request before any handler runs, and a parse failure (bytes that are not
protobuf, or invalid UTF-8 in a string field, which clients in other languages can send) ends
the call with UNKNOWN and a Python exception text. This interceptor parses unary requests itself:
what does not parse reaches the handler as `Undecodable`, which is refused with INVALID_ARGUMENT
and a message that says what is wrong. Streamed requests (reflection) are left to grpc.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
from google.protobuf import descriptor as descriptor_lib
from google.protobuf import descriptor_pb2, descriptor_pool, message, message_factory

from .errors import InvalidArgument, MalformedRequest
from .grpc_types import Context, Continuation, Handler, Interceptor
from .status import abort


class Undecodable:
    """Stands for a request whose bytes did not parse; `field` names the string field that is
    not valid UTF-8, when that is the cause."""

    __slots__ = ("field", "reason")

    def __init__(self, reason: str, field: str = "") -> None:
        self.reason = reason
        self.field = field


def _tolerant(parse: Callable[[bytes], Any]) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except Exception as exc:
            return Undecodable(str(exc), _bad_utf8_field(parse, data))

    return deserialize


def _bad_utf8_field(parse: Callable[[bytes], Any], data: bytes) -> str:
    """The first string field of the request that holds invalid UTF-8, or ""."""
    message_class = getattr(parse, "__self__", None)
    descriptor = getattr(message_class, "DESCRIPTOR", None)
    if descriptor is None:
        return ""
    lenient = _with_bytes_for_strings(descriptor.full_name)
    if lenient is None:
        return ""
    try:
        parsed = lenient.FromString(data)
    except Exception:
        return ""  # not a serialized message at all
    for field in descriptor.fields:
        if field.type == descriptor_lib.FieldDescriptor.TYPE_STRING:
            values = getattr(parsed, field.name)
            for value in [values] if isinstance(values, bytes) else values:
                try:
                    value.decode("utf-8")
                except UnicodeDecodeError:
                    return str(field.name)
    return ""


@functools.cache
def _with_bytes_for_strings(full_name: str) -> type[message.Message] | None:
    """A twin of a message type in its own pool, with `bytes` where it has `string`."""
    try:
        original = descriptor_pool.Default().FindMessageTypeByName(full_name)  # type: ignore[no-untyped-call]
    except KeyError:
        return None
    pool = descriptor_pool.DescriptorPool()
    added: set[str] = set()

    def add(file: descriptor_lib.FileDescriptor) -> None:
        for dependency in file.dependencies:
            if dependency.name not in added:
                add(dependency)
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)  # type: ignore[no-untyped-call]
        if file is original.file:
            for message_type in proto.message_type:
                for field in message_type.field:
                    if field.type == descriptor_pb2.FieldDescriptorProto.TYPE_STRING:
                        field.type = descriptor_pb2.FieldDescriptorProto.TYPE_BYTES
        pool.Add(proto)  # type: ignore[no-untyped-call]
        added.add(file.name)

    add(original.file)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(full_name))  # type: ignore[no-untyped-call]


async def _refuse(context: Context, request: Undecodable) -> None:
    if request.field:
        await abort(
            context,
            InvalidArgument(
                request.field,
                "not valid UTF-8: protobuf string fields must hold UTF-8 text (send bytes that "
                "are not text, e.g. a file name in another encoding, re-encoded as UTF-8)",
            ),
        )
    await abort(
        context,
        MalformedRequest(
            f"the request does not parse ({request.reason}): it must be a serialized message "
            "of the method's request type"
        ),
    )


class RequestDecodingInterceptor(Interceptor):
    """Turns unparseable unary requests into INVALID_ARGUMENT for every service."""

    def __init__(self) -> None:
        #: method -> (the handler it wraps, the wrapper): built once per method, not per call.
        self._wrapped: dict[str, tuple[Handler, Handler]] = {}

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> Handler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.request_deserializer is None:
            return handler
        method = handler_call_details.method
        cached = self._wrapped.get(method)
        if cached is not None and cached[0] is handler:
            return cached[1]
        wrapped = self._wrap(handler)
        self._wrapped[method] = (handler, wrapped)
        return wrapped

    def _wrap(self, handler: Handler) -> Handler:
        assert handler.request_deserializer is not None
        parse = _tolerant(handler.request_deserializer)
        if handler.unary_unary:
            unary: Callable[..., Any] = handler.unary_unary

            async def checked_unary(request: Any, context: Context) -> Any:
                if isinstance(request, Undecodable):
                    await _refuse(context, request)
                return await unary(request, context)

            return grpc.unary_unary_rpc_method_handler(
                checked_unary, parse, handler.response_serializer
            )
        if handler.unary_stream:
            stream: Callable[..., Any] = handler.unary_stream
            checked: Callable[..., Any]
            if inspect.isasyncgenfunction(stream):  # yields its responses (ours)

                async def checked_generator(request: Any, context: Context) -> AsyncIterator[Any]:
                    if isinstance(request, Undecodable):
                        await _refuse(context, request)
                    async for response in stream(request, context):
                        yield response

                checked = checked_generator
            else:  # writes its responses with context.write (grpc's health Watch)

                async def checked_writer(request: Any, context: Context) -> None:
                    if isinstance(request, Undecodable):
                        await _refuse(context, request)
                    await stream(request, context)

                checked = checked_writer
            return grpc.unary_stream_rpc_method_handler(checked, parse, handler.response_serializer)
        return handler
