"""The committed generated modules match a fresh run of protos/generate.py, and the contract has
the names the issue fixes."""

from __future__ import annotations

import runpy
from pathlib import Path

from mediascan.v1 import scan_pb2, scan_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
PROTOS = REPO / "protos"
COMMITTED = PROTOS / "mediascan" / "v1"


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    """Every file protos/generate.py writes equals the committed one, byte for byte."""
    generate = runpy.run_path(str(PROTOS / "generate.py"))["generate"]
    generate(tmp_path)
    fresh = {
        p.relative_to(tmp_path).as_posix(): p.read_bytes()
        for p in tmp_path.rglob("*")
        if p.is_file()
    }
    assert {
        "mediascan/v1/scan_pb2.py",
        "mediascan/v1/scan_pb2.pyi",
        "mediascan/v1/scan_pb2_grpc.py",
    } <= fresh.keys()
    committed_modules = {p.relative_to(PROTOS).as_posix() for p in COMMITTED.glob("*_pb2*.py*")}
    assert committed_modules <= fresh.keys(), "committed generated modules without a .proto"
    missing = sorted(name for name in fresh if not (PROTOS / name).is_file())
    assert not missing, f"generated files not committed (run `make protos`): {missing}"
    stale = sorted(name for name in fresh if fresh[name] != (PROTOS / name).read_bytes())
    assert not stale, f"stale generated files (run `make protos`): {stale}"


def test_contract_names() -> None:
    service = scan_pb2.DESCRIPTOR.services_by_name["ScanService"]
    assert service.full_name == "mediascan.v1.ScanService"
    assert {m.name for m in service.methods} >= {
        "SubmitScan",
        "GetJob",
        "WatchJob",
        "CancelJob",
        "ListJobs",
        "DeleteJob",
        "ListVideos",
        "GetVideo",
    }
    watch = service.methods_by_name["WatchJob"]
    assert watch.server_streaming and not watch.client_streaming
    assert scan_pb2.JobState.Name(0) == "JOB_STATE_UNSPECIFIED"
    assert set(scan_pb2.JobState.keys()) == {
        "JOB_STATE_UNSPECIFIED",
        "JOB_STATE_QUEUED",
        "JOB_STATE_RUNNING",
        "JOB_STATE_SUCCEEDED",
        "JOB_STATE_FAILED",
        "JOB_STATE_TIMED_OUT",
        "JOB_STATE_CANCELLED",
    }
    submit = scan_pb2.SubmitScanRequest.DESCRIPTOR.fields_by_name
    assert {"path", "recursive", "timeout", "request_id", "priority"} <= set(submit.keys())
    assert submit["timeout"].message_type.full_name == "google.protobuf.Duration"
    assert hasattr(scan_pb2_grpc, "ScanServiceStub")
