"""Server reflection that carries the contract's comments.

grpcio-reflection serves file descriptors rebuilt from the generated `_pb2` modules, which hold no
comments, so `grpcurl describe` would show bare names. `make protos` also writes
`scan_descriptor.binpb`, the same descriptors with their source comments; this servicer answers
with those for our files and leaves every other file (google/protobuf/..., health) as it was.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import resources
from typing import Any

import grpc
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

DESCRIPTOR_SETS = ("scan_descriptor.binpb",)


def documented_files() -> dict[str, bytes]:
    """FileDescriptorProtos with comments, serialized, by file name."""
    found: dict[str, bytes] = {}
    package = resources.files("mediascan.v1")
    for name in DESCRIPTOR_SETS:
        descriptor_set = descriptor_pb2.FileDescriptorSet.FromString((package / name).read_bytes())
        for file in descriptor_set.file:
            found[file.name] = file.SerializeToString()
    return found


class DocumentedReflectionServicer(reflection.aio.ReflectionServicer):  # type: ignore[misc,name-defined]
    """grpc.reflection.v1alpha.ServerReflection, answering with commented descriptors."""

    def __init__(self, service_names: Iterable[str], documented: dict[str, bytes]) -> None:
        super().__init__(service_names)
        self._documented = documented

    def _with_comments(self, response: Any) -> Any:
        if response.HasField("file_descriptor_response"):
            files = response.file_descriptor_response.file_descriptor_proto
            for index, raw in enumerate(files):
                name = descriptor_pb2.FileDescriptorProto.FromString(raw).name
                if name in self._documented:
                    files[index] = self._documented[name]
        return response

    def _file_by_filename(self, request: Any, filename: str) -> Any:
        return self._with_comments(super()._file_by_filename(request, filename))

    def _file_containing_symbol(self, request: Any, fully_qualified_name: str) -> Any:
        response = super()._file_containing_symbol(request, fully_qualified_name)
        if response.HasField("error_response") and "." in fully_qualified_name:
            # A method (pkg.Service.Method) is not a symbol the descriptor pool looks up:
            # answer with the file of its service.
            parent = fully_qualified_name.rsplit(".", 1)[0]
            response = super()._file_containing_symbol(request, parent)
        return self._with_comments(response)

    def _file_containing_extension(
        self, request: Any, containing_type: str, extension_number: int
    ) -> Any:
        return self._with_comments(
            super()._file_containing_extension(request, containing_type, extension_number)
        )


def enable_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection for `service_names` (and reflection itself) on `server`."""
    names = (*service_names, reflection.SERVICE_NAME)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(  # type: ignore[no-untyped-call]
        DocumentedReflectionServicer(names, documented_files()), server
    )
