"""Generate the Python modules for the .proto files beside this script.

Run by `make protos`; the test suite calls `generate()` into a temporary folder and compares the
result with the committed modules, so stale generated code fails the tests.
"""

from __future__ import annotations

import pathlib
import sys

HERE = pathlib.Path(__file__).resolve().parent


def proto_files() -> list[pathlib.Path]:
    return sorted((HERE / "mediascan").rglob("*.proto"))


def generate(out_dir: pathlib.Path) -> None:
    """Write `*_pb2.py`, `*_pb2.pyi`, `*_pb2_grpc.py` and `*_descriptor.binpb` (descriptors with
    comments) for every .proto into out_dir."""
    from importlib import resources

    import google.rpc.status_pb2
    from grpc_tools import protoc

    googleapis = pathlib.Path(google.rpc.status_pb2.__file__).resolve().parents[2]
    well_known = resources.files("grpc_tools") / "_proto"
    out_dir.mkdir(parents=True, exist_ok=True)
    args = [
        "protoc",
        f"-I{HERE}",
        f"-I{googleapis}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(p) for p in proto_files()),
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed: see the messages above")
    # The descriptors with their comments, served by the server's reflection so that
    # `grpcurl describe` shows the documentation (the _pb2 modules carry no comments).
    for proto in proto_files():
        target = out_dir / proto.relative_to(HERE).with_name(proto.stem + "_descriptor.binpb")
        documented = [
            "protoc",
            f"-I{HERE}",
            f"-I{googleapis}",
            f"-I{well_known}",
            "--include_source_info",
            f"--descriptor_set_out={target}",
            str(proto),
        ]
        if protoc.main(documented) != 0:
            raise SystemExit("protoc failed: see the messages above")


if __name__ == "__main__":
    generate(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
