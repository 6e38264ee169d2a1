"""`Stub`: the generated ScanService stub's methods, with the types the generated code does not
declare."""

from __future__ import annotations

import grpc
from google.protobuf import empty_pb2

from mediascan.v1 import scan_pb2, scan_pb2_grpc

_Unary = grpc.aio.UnaryUnaryMultiCallable
_Stream = grpc.aio.UnaryStreamMultiCallable


class Stub:
    """The methods of `ScanService` on one channel."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        stub = scan_pb2_grpc.ScanServiceStub(channel)  # type: ignore[no-untyped-call]
        self.SubmitScan: _Unary[scan_pb2.SubmitScanRequest, scan_pb2.SubmitScanResponse] = (
            stub.SubmitScan
        )
        self.GetJob: _Unary[scan_pb2.GetJobRequest, scan_pb2.Job] = stub.GetJob
        self.WatchJob: _Stream[scan_pb2.WatchJobRequest, scan_pb2.JobEvent] = stub.WatchJob
        self.CancelJob: _Unary[scan_pb2.CancelJobRequest, scan_pb2.Job] = stub.CancelJob
        self.ListJobs: _Unary[scan_pb2.ListJobsRequest, scan_pb2.ListJobsResponse] = stub.ListJobs
        self.ListFileErrors: _Unary[
            scan_pb2.ListFileErrorsRequest, scan_pb2.ListFileErrorsResponse
        ] = stub.ListFileErrors
        self.DeleteJob: _Unary[scan_pb2.DeleteJobRequest, empty_pb2.Empty] = stub.DeleteJob
        self.ListVideos: _Unary[scan_pb2.ListVideosRequest, scan_pb2.ListVideosResponse] = (
            stub.ListVideos
        )
        self.GetVideo: _Unary[scan_pb2.GetVideoRequest, scan_pb2.Video] = stub.GetVideo
        self.ListDuplicates: _Unary[
            scan_pb2.ListDuplicatesRequest, scan_pb2.ListDuplicatesResponse
        ] = stub.ListDuplicates
        self.CreateLibrary: _Unary[scan_pb2.CreateLibraryRequest, scan_pb2.Library] = (
            stub.CreateLibrary
        )
        self.GetLibrary: _Unary[scan_pb2.GetLibraryRequest, scan_pb2.Library] = stub.GetLibrary
        self.ListLibraries: _Unary[
            scan_pb2.ListLibrariesRequest, scan_pb2.ListLibrariesResponse
        ] = stub.ListLibraries
        self.UpdateLibrary: _Unary[scan_pb2.UpdateLibraryRequest, scan_pb2.Library] = (
            stub.UpdateLibrary
        )
        self.DeleteLibrary: _Unary[scan_pb2.DeleteLibraryRequest, empty_pb2.Empty] = (
            stub.DeleteLibrary
        )
        self.WatchLibrary: _Stream[scan_pb2.WatchLibraryRequest, scan_pb2.LibraryChange] = (
            stub.WatchLibrary
        )
