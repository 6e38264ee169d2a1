"""Type aliases for grpc.aio's generic classes, shared by the servicer and the interceptors.

The generic forms exist only in the type stubs, so at run time the bare classes stand in.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    #: The servicer context of any grpc.aio method.
    Context = grpc.aio.ServicerContext[Any, Any]
    #: What an interceptor returns for a call.
    Handler = grpc.RpcMethodHandler[Any, Any]
    #: What an interceptor calls to get the next handler.
    Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[Handler]]
    #: The base class of grpc.aio server interceptors.
    Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    Context = grpc.aio.ServicerContext
    Handler = grpc.RpcMethodHandler
    Continuation = Callable
    Interceptor = grpc.aio.ServerInterceptor
