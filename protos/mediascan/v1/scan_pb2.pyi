import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import empty_pb2 as _empty_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class JobState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    JOB_STATE_UNSPECIFIED: _ClassVar[JobState]
    JOB_STATE_QUEUED: _ClassVar[JobState]
    JOB_STATE_RUNNING: _ClassVar[JobState]
    JOB_STATE_SUCCEEDED: _ClassVar[JobState]
    JOB_STATE_FAILED: _ClassVar[JobState]
    JOB_STATE_TIMED_OUT: _ClassVar[JobState]
    JOB_STATE_CANCELLED: _ClassVar[JobState]

class Verify(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    VERIFY_UNSPECIFIED: _ClassVar[Verify]
    VERIFY_NONE: _ClassVar[Verify]
    VERIFY_DECODE: _ClassVar[Verify]

class Health(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_UNSPECIFIED: _ClassVar[Health]
    HEALTH_OK: _ClassVar[Health]
    HEALTH_WARNINGS: _ClassVar[Health]
    HEALTH_CORRUPT: _ClassVar[Health]

class ScanPhase(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SCAN_PHASE_UNSPECIFIED: _ClassVar[ScanPhase]
    SCAN_PHASE_DISCOVERING: _ClassVar[ScanPhase]
    SCAN_PHASE_PROBING: _ClassVar[ScanPhase]
    SCAN_PHASE_FINALIZING: _ClassVar[ScanPhase]

class Trigger(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRIGGER_UNSPECIFIED: _ClassVar[Trigger]
    TRIGGER_USER: _ClassVar[Trigger]
    TRIGGER_WATCH: _ClassVar[Trigger]
    TRIGGER_SCHEDULE: _ClassVar[Trigger]

class DurationSource(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DURATION_SOURCE_UNSPECIFIED: _ClassVar[DurationSource]
    DURATION_SOURCE_HEADER: _ClassVar[DurationSource]
    DURATION_SOURCE_PACKETS: _ClassVar[DurationSource]
    DURATION_SOURCE_ESTIMATE: _ClassVar[DurationSource]

class HdrKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HDR_KIND_UNSPECIFIED: _ClassVar[HdrKind]
    HDR_KIND_NONE: _ClassVar[HdrKind]
    HDR_KIND_HDR10: _ClassVar[HdrKind]
    HDR_KIND_HDR10_PLUS: _ClassVar[HdrKind]
    HDR_KIND_HLG: _ClassVar[HdrKind]
    HDR_KIND_DOLBY_VISION: _ClassVar[HdrKind]

class StreamKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STREAM_KIND_UNSPECIFIED: _ClassVar[StreamKind]
    STREAM_KIND_VIDEO: _ClassVar[StreamKind]
    STREAM_KIND_AUDIO: _ClassVar[StreamKind]
    STREAM_KIND_SUBTITLE: _ClassVar[StreamKind]
    STREAM_KIND_DATA: _ClassVar[StreamKind]
    STREAM_KIND_ATTACHMENT: _ClassVar[StreamKind]

class WatchMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    WATCH_MODE_UNSPECIFIED: _ClassVar[WatchMode]
    WATCH_MODE_OFF: _ClassVar[WatchMode]
    WATCH_MODE_EVENTS: _ClassVar[WatchMode]
    WATCH_MODE_POLL: _ClassVar[WatchMode]
    WATCH_MODE_AUTO: _ClassVar[WatchMode]

class LibraryState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LIBRARY_STATE_UNSPECIFIED: _ClassVar[LibraryState]
    LIBRARY_STATE_ACTIVE: _ClassVar[LibraryState]
    LIBRARY_STATE_OFFLINE: _ClassVar[LibraryState]
    LIBRARY_STATE_DEGRADED: _ClassVar[LibraryState]

class ChangeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANGE_KIND_UNSPECIFIED: _ClassVar[ChangeKind]
    CHANGE_KIND_ADDED: _ClassVar[ChangeKind]
    CHANGE_KIND_UPDATED: _ClassVar[ChangeKind]
    CHANGE_KIND_MOVED: _ClassVar[ChangeKind]
    CHANGE_KIND_REMOVED: _ClassVar[ChangeKind]
    CHANGE_KIND_STATUS: _ClassVar[ChangeKind]
    CHANGE_KIND_RESYNC: _ClassVar[ChangeKind]
JOB_STATE_UNSPECIFIED: JobState
JOB_STATE_QUEUED: JobState
JOB_STATE_RUNNING: JobState
JOB_STATE_SUCCEEDED: JobState
JOB_STATE_FAILED: JobState
JOB_STATE_TIMED_OUT: JobState
JOB_STATE_CANCELLED: JobState
VERIFY_UNSPECIFIED: Verify
VERIFY_NONE: Verify
VERIFY_DECODE: Verify
HEALTH_UNSPECIFIED: Health
HEALTH_OK: Health
HEALTH_WARNINGS: Health
HEALTH_CORRUPT: Health
SCAN_PHASE_UNSPECIFIED: ScanPhase
SCAN_PHASE_DISCOVERING: ScanPhase
SCAN_PHASE_PROBING: ScanPhase
SCAN_PHASE_FINALIZING: ScanPhase
TRIGGER_UNSPECIFIED: Trigger
TRIGGER_USER: Trigger
TRIGGER_WATCH: Trigger
TRIGGER_SCHEDULE: Trigger
DURATION_SOURCE_UNSPECIFIED: DurationSource
DURATION_SOURCE_HEADER: DurationSource
DURATION_SOURCE_PACKETS: DurationSource
DURATION_SOURCE_ESTIMATE: DurationSource
HDR_KIND_UNSPECIFIED: HdrKind
HDR_KIND_NONE: HdrKind
HDR_KIND_HDR10: HdrKind
HDR_KIND_HDR10_PLUS: HdrKind
HDR_KIND_HLG: HdrKind
HDR_KIND_DOLBY_VISION: HdrKind
STREAM_KIND_UNSPECIFIED: StreamKind
STREAM_KIND_VIDEO: StreamKind
STREAM_KIND_AUDIO: StreamKind
STREAM_KIND_SUBTITLE: StreamKind
STREAM_KIND_DATA: StreamKind
STREAM_KIND_ATTACHMENT: StreamKind
WATCH_MODE_UNSPECIFIED: WatchMode
WATCH_MODE_OFF: WatchMode
WATCH_MODE_EVENTS: WatchMode
WATCH_MODE_POLL: WatchMode
WATCH_MODE_AUTO: WatchMode
LIBRARY_STATE_UNSPECIFIED: LibraryState
LIBRARY_STATE_ACTIVE: LibraryState
LIBRARY_STATE_OFFLINE: LibraryState
LIBRARY_STATE_DEGRADED: LibraryState
CHANGE_KIND_UNSPECIFIED: ChangeKind
CHANGE_KIND_ADDED: ChangeKind
CHANGE_KIND_UPDATED: ChangeKind
CHANGE_KIND_MOVED: ChangeKind
CHANGE_KIND_REMOVED: ChangeKind
CHANGE_KIND_STATUS: ChangeKind
CHANGE_KIND_RESYNC: ChangeKind

class SubmitScanRequest(_message.Message):
    __slots__ = ("path", "recursive", "follow_symlinks", "timeout", "request_id", "priority", "full", "verify", "force")
    PATH_FIELD_NUMBER: _ClassVar[int]
    RECURSIVE_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_SYMLINKS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    path: str
    recursive: bool
    follow_symlinks: bool
    timeout: _duration_pb2.Duration
    request_id: str
    priority: int
    full: bool
    verify: Verify
    force: bool
    def __init__(self, path: _Optional[str] = ..., recursive: _Optional[bool] = ..., follow_symlinks: _Optional[bool] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., request_id: _Optional[str] = ..., priority: _Optional[int] = ..., full: _Optional[bool] = ..., verify: _Optional[_Union[Verify, str]] = ..., force: _Optional[bool] = ...) -> None: ...

class SubmitScanResponse(_message.Message):
    __slots__ = ("job_id", "job", "deduplicated")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    DEDUPLICATED_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    job: Job
    deduplicated: bool
    def __init__(self, job_id: _Optional[str] = ..., job: _Optional[_Union[Job, _Mapping]] = ..., deduplicated: _Optional[bool] = ...) -> None: ...

class ScanOptions(_message.Message):
    __slots__ = ("recursive", "follow_symlinks", "timeout", "priority", "full", "verify", "force", "folders", "trees", "quiet_window", "extensions")
    RECURSIVE_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_SYMLINKS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    FULL_FIELD_NUMBER: _ClassVar[int]
    VERIFY_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    FOLDERS_FIELD_NUMBER: _ClassVar[int]
    TREES_FIELD_NUMBER: _ClassVar[int]
    QUIET_WINDOW_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    recursive: bool
    follow_symlinks: bool
    timeout: _duration_pb2.Duration
    priority: int
    full: bool
    verify: Verify
    force: bool
    folders: _containers.RepeatedScalarFieldContainer[str]
    trees: _containers.RepeatedScalarFieldContainer[str]
    quiet_window: _duration_pb2.Duration
    extensions: str
    def __init__(self, recursive: _Optional[bool] = ..., follow_symlinks: _Optional[bool] = ..., timeout: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., priority: _Optional[int] = ..., full: _Optional[bool] = ..., verify: _Optional[_Union[Verify, str]] = ..., force: _Optional[bool] = ..., folders: _Optional[_Iterable[str]] = ..., trees: _Optional[_Iterable[str]] = ..., quiet_window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., extensions: _Optional[str] = ...) -> None: ...

class Job(_message.Message):
    __slots__ = ("job_id", "state", "path", "options", "progress", "result", "error", "create_time", "start_time", "end_time", "attempt", "last_sequence", "request_id", "node", "trigger", "library")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OPTIONS_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    TRIGGER_FIELD_NUMBER: _ClassVar[int]
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    state: JobState
    path: str
    options: ScanOptions
    progress: Progress
    result: ScanResult
    error: _status_pb2.Status
    create_time: _timestamp_pb2.Timestamp
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    attempt: int
    last_sequence: int
    request_id: str
    node: str
    trigger: Trigger
    library: str
    def __init__(self, job_id: _Optional[str] = ..., state: _Optional[_Union[JobState, str]] = ..., path: _Optional[str] = ..., options: _Optional[_Union[ScanOptions, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[ScanResult, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., attempt: _Optional[int] = ..., last_sequence: _Optional[int] = ..., request_id: _Optional[str] = ..., node: _Optional[str] = ..., trigger: _Optional[_Union[Trigger, str]] = ..., library: _Optional[str] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("phase", "files_found", "files_done", "files_total", "added", "updated", "unchanged", "removed", "failed", "bytes_done", "current_path", "fraction", "moved", "deferred")
    PHASE_FIELD_NUMBER: _ClassVar[int]
    FILES_FOUND_FIELD_NUMBER: _ClassVar[int]
    FILES_DONE_FIELD_NUMBER: _ClassVar[int]
    FILES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    BYTES_DONE_FIELD_NUMBER: _ClassVar[int]
    CURRENT_PATH_FIELD_NUMBER: _ClassVar[int]
    FRACTION_FIELD_NUMBER: _ClassVar[int]
    MOVED_FIELD_NUMBER: _ClassVar[int]
    DEFERRED_FIELD_NUMBER: _ClassVar[int]
    phase: ScanPhase
    files_found: int
    files_done: int
    files_total: int
    added: int
    updated: int
    unchanged: int
    removed: int
    failed: int
    bytes_done: int
    current_path: str
    fraction: float
    moved: int
    deferred: int
    def __init__(self, phase: _Optional[_Union[ScanPhase, str]] = ..., files_found: _Optional[int] = ..., files_done: _Optional[int] = ..., files_total: _Optional[int] = ..., added: _Optional[int] = ..., updated: _Optional[int] = ..., unchanged: _Optional[int] = ..., removed: _Optional[int] = ..., failed: _Optional[int] = ..., bytes_done: _Optional[int] = ..., current_path: _Optional[str] = ..., fraction: _Optional[float] = ..., moved: _Optional[int] = ..., deferred: _Optional[int] = ...) -> None: ...

class FileError(_message.Message):
    __slots__ = ("path", "status")
    PATH_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    path: str
    status: _status_pb2.Status
    def __init__(self, path: _Optional[str] = ..., status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class ScanResult(_message.Message):
    __slots__ = ("files_total", "added", "updated", "unchanged", "removed", "failed", "bytes_total", "file_errors", "file_errors_truncated", "file_error_count", "moved", "deferred", "removals_withheld")
    FILES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    ADDED_FIELD_NUMBER: _ClassVar[int]
    UPDATED_FIELD_NUMBER: _ClassVar[int]
    UNCHANGED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    BYTES_TOTAL_FIELD_NUMBER: _ClassVar[int]
    FILE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    FILE_ERRORS_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    FILE_ERROR_COUNT_FIELD_NUMBER: _ClassVar[int]
    MOVED_FIELD_NUMBER: _ClassVar[int]
    DEFERRED_FIELD_NUMBER: _ClassVar[int]
    REMOVALS_WITHHELD_FIELD_NUMBER: _ClassVar[int]
    files_total: int
    added: int
    updated: int
    unchanged: int
    removed: int
    failed: int
    bytes_total: int
    file_errors: _containers.RepeatedCompositeFieldContainer[FileError]
    file_errors_truncated: bool
    file_error_count: int
    moved: int
    deferred: int
    removals_withheld: int
    def __init__(self, files_total: _Optional[int] = ..., added: _Optional[int] = ..., updated: _Optional[int] = ..., unchanged: _Optional[int] = ..., removed: _Optional[int] = ..., failed: _Optional[int] = ..., bytes_total: _Optional[int] = ..., file_errors: _Optional[_Iterable[_Union[FileError, _Mapping]]] = ..., file_errors_truncated: _Optional[bool] = ..., file_error_count: _Optional[int] = ..., moved: _Optional[int] = ..., deferred: _Optional[int] = ..., removals_withheld: _Optional[int] = ...) -> None: ...

class GetJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class WatchJobRequest(_message.Message):
    __slots__ = ("job_id", "after_sequence")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    after_sequence: int
    def __init__(self, job_id: _Optional[str] = ..., after_sequence: _Optional[int] = ...) -> None: ...

class JobSnapshot(_message.Message):
    __slots__ = ("job", "resync")
    JOB_FIELD_NUMBER: _ClassVar[int]
    RESYNC_FIELD_NUMBER: _ClassVar[int]
    job: Job
    resync: bool
    def __init__(self, job: _Optional[_Union[Job, _Mapping]] = ..., resync: _Optional[bool] = ...) -> None: ...

class StateChange(_message.Message):
    __slots__ = ("from_state", "to_state", "job")
    FROM_STATE_FIELD_NUMBER: _ClassVar[int]
    TO_STATE_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    from_state: JobState
    to_state: JobState
    job: Job
    def __init__(self, from_state: _Optional[_Union[JobState, str]] = ..., to_state: _Optional[_Union[JobState, str]] = ..., job: _Optional[_Union[Job, _Mapping]] = ...) -> None: ...

class JobEvent(_message.Message):
    __slots__ = ("job_id", "sequence", "event_time", "snapshot", "state_change", "progress", "file_error")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EVENT_TIME_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    STATE_CHANGE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    FILE_ERROR_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    sequence: int
    event_time: _timestamp_pb2.Timestamp
    snapshot: JobSnapshot
    state_change: StateChange
    progress: Progress
    file_error: FileError
    def __init__(self, job_id: _Optional[str] = ..., sequence: _Optional[int] = ..., event_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., snapshot: _Optional[_Union[JobSnapshot, _Mapping]] = ..., state_change: _Optional[_Union[StateChange, _Mapping]] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., file_error: _Optional[_Union[FileError, _Mapping]] = ...) -> None: ...

class CancelJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class ListJobsRequest(_message.Message):
    __slots__ = ("state", "page_size", "page_token")
    STATE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    state: JobState
    page_size: int
    page_token: str
    def __init__(self, state: _Optional[_Union[JobState, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListJobsResponse(_message.Message):
    __slots__ = ("jobs", "next_page_token")
    JOBS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    jobs: _containers.RepeatedCompositeFieldContainer[Job]
    next_page_token: str
    def __init__(self, jobs: _Optional[_Iterable[_Union[Job, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ListFileErrorsRequest(_message.Message):
    __slots__ = ("job_id", "page_size", "page_token")
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    page_size: int
    page_token: str
    def __init__(self, job_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListFileErrorsResponse(_message.Message):
    __slots__ = ("file_errors", "next_page_token")
    FILE_ERRORS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    file_errors: _containers.RepeatedCompositeFieldContainer[FileError]
    next_page_token: str
    def __init__(self, file_errors: _Optional[_Iterable[_Union[FileError, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteJobRequest(_message.Message):
    __slots__ = ("job_id",)
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    job_id: str
    def __init__(self, job_id: _Optional[str] = ...) -> None: ...

class Video(_message.Message):
    __slots__ = ("video_id", "path", "size_bytes", "modify_time", "container", "duration", "bit_rate", "video_codec", "width", "height", "frame_rate", "audio_codec", "audio_channels", "audio_sample_rate", "audio_streams", "probe_time", "job_id", "duration_source", "variable_frame_rate", "truncated", "header_duration", "rotation", "display_width", "display_height", "sample_aspect_ratio", "display_aspect_ratio", "pixel_format", "bit_depth", "chroma_subsampling", "alpha", "field_order", "interlaced", "color_primaries", "color_transfer", "color_space", "color_range", "hdr", "dolby_vision_profile", "max_content_light_level", "max_frame_average_light_level", "mastering_max_luminance", "mastering_min_luminance", "streams", "stream_count", "chapters", "chapter_count", "title", "creation_time", "encoder", "timecode", "metadata_cut", "video_stream_index", "audio_stream_index", "prober_version", "health", "health_report", "fingerprint")
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MODIFY_TIME_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    DURATION_FIELD_NUMBER: _ClassVar[int]
    BIT_RATE_FIELD_NUMBER: _ClassVar[int]
    VIDEO_CODEC_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FRAME_RATE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CODEC_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CHANNELS_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_STREAMS_FIELD_NUMBER: _ClassVar[int]
    PROBE_TIME_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    DURATION_SOURCE_FIELD_NUMBER: _ClassVar[int]
    VARIABLE_FRAME_RATE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    HEADER_DURATION_FIELD_NUMBER: _ClassVar[int]
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_WIDTH_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_ASPECT_RATIO_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_ASPECT_RATIO_FIELD_NUMBER: _ClassVar[int]
    PIXEL_FORMAT_FIELD_NUMBER: _ClassVar[int]
    BIT_DEPTH_FIELD_NUMBER: _ClassVar[int]
    CHROMA_SUBSAMPLING_FIELD_NUMBER: _ClassVar[int]
    ALPHA_FIELD_NUMBER: _ClassVar[int]
    FIELD_ORDER_FIELD_NUMBER: _ClassVar[int]
    INTERLACED_FIELD_NUMBER: _ClassVar[int]
    COLOR_PRIMARIES_FIELD_NUMBER: _ClassVar[int]
    COLOR_TRANSFER_FIELD_NUMBER: _ClassVar[int]
    COLOR_SPACE_FIELD_NUMBER: _ClassVar[int]
    COLOR_RANGE_FIELD_NUMBER: _ClassVar[int]
    HDR_FIELD_NUMBER: _ClassVar[int]
    DOLBY_VISION_PROFILE_FIELD_NUMBER: _ClassVar[int]
    MAX_CONTENT_LIGHT_LEVEL_FIELD_NUMBER: _ClassVar[int]
    MAX_FRAME_AVERAGE_LIGHT_LEVEL_FIELD_NUMBER: _ClassVar[int]
    MASTERING_MAX_LUMINANCE_FIELD_NUMBER: _ClassVar[int]
    MASTERING_MIN_LUMINANCE_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    STREAM_COUNT_FIELD_NUMBER: _ClassVar[int]
    CHAPTERS_FIELD_NUMBER: _ClassVar[int]
    CHAPTER_COUNT_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    CREATION_TIME_FIELD_NUMBER: _ClassVar[int]
    ENCODER_FIELD_NUMBER: _ClassVar[int]
    TIMECODE_FIELD_NUMBER: _ClassVar[int]
    METADATA_CUT_FIELD_NUMBER: _ClassVar[int]
    VIDEO_STREAM_INDEX_FIELD_NUMBER: _ClassVar[int]
    AUDIO_STREAM_INDEX_FIELD_NUMBER: _ClassVar[int]
    PROBER_VERSION_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    HEALTH_REPORT_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    video_id: str
    path: str
    size_bytes: int
    modify_time: _timestamp_pb2.Timestamp
    container: str
    duration: _duration_pb2.Duration
    bit_rate: int
    video_codec: str
    width: int
    height: int
    frame_rate: float
    audio_codec: str
    audio_channels: int
    audio_sample_rate: int
    audio_streams: int
    probe_time: _timestamp_pb2.Timestamp
    job_id: str
    duration_source: DurationSource
    variable_frame_rate: bool
    truncated: bool
    header_duration: _duration_pb2.Duration
    rotation: int
    display_width: int
    display_height: int
    sample_aspect_ratio: str
    display_aspect_ratio: str
    pixel_format: str
    bit_depth: int
    chroma_subsampling: str
    alpha: bool
    field_order: str
    interlaced: bool
    color_primaries: str
    color_transfer: str
    color_space: str
    color_range: str
    hdr: HdrKind
    dolby_vision_profile: int
    max_content_light_level: int
    max_frame_average_light_level: int
    mastering_max_luminance: float
    mastering_min_luminance: float
    streams: _containers.RepeatedCompositeFieldContainer[Stream]
    stream_count: int
    chapters: _containers.RepeatedCompositeFieldContainer[Chapter]
    chapter_count: int
    title: str
    creation_time: _timestamp_pb2.Timestamp
    encoder: str
    timecode: str
    metadata_cut: bool
    video_stream_index: int
    audio_stream_index: int
    prober_version: int
    health: Health
    health_report: HealthReport
    fingerprint: str
    def __init__(self, video_id: _Optional[str] = ..., path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., modify_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., container: _Optional[str] = ..., duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., bit_rate: _Optional[int] = ..., video_codec: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., frame_rate: _Optional[float] = ..., audio_codec: _Optional[str] = ..., audio_channels: _Optional[int] = ..., audio_sample_rate: _Optional[int] = ..., audio_streams: _Optional[int] = ..., probe_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., job_id: _Optional[str] = ..., duration_source: _Optional[_Union[DurationSource, str]] = ..., variable_frame_rate: _Optional[bool] = ..., truncated: _Optional[bool] = ..., header_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., rotation: _Optional[int] = ..., display_width: _Optional[int] = ..., display_height: _Optional[int] = ..., sample_aspect_ratio: _Optional[str] = ..., display_aspect_ratio: _Optional[str] = ..., pixel_format: _Optional[str] = ..., bit_depth: _Optional[int] = ..., chroma_subsampling: _Optional[str] = ..., alpha: _Optional[bool] = ..., field_order: _Optional[str] = ..., interlaced: _Optional[bool] = ..., color_primaries: _Optional[str] = ..., color_transfer: _Optional[str] = ..., color_space: _Optional[str] = ..., color_range: _Optional[str] = ..., hdr: _Optional[_Union[HdrKind, str]] = ..., dolby_vision_profile: _Optional[int] = ..., max_content_light_level: _Optional[int] = ..., max_frame_average_light_level: _Optional[int] = ..., mastering_max_luminance: _Optional[float] = ..., mastering_min_luminance: _Optional[float] = ..., streams: _Optional[_Iterable[_Union[Stream, _Mapping]]] = ..., stream_count: _Optional[int] = ..., chapters: _Optional[_Iterable[_Union[Chapter, _Mapping]]] = ..., chapter_count: _Optional[int] = ..., title: _Optional[str] = ..., creation_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., encoder: _Optional[str] = ..., timecode: _Optional[str] = ..., metadata_cut: _Optional[bool] = ..., video_stream_index: _Optional[int] = ..., audio_stream_index: _Optional[int] = ..., prober_version: _Optional[int] = ..., health: _Optional[_Union[Health, str]] = ..., health_report: _Optional[_Union[HealthReport, _Mapping]] = ..., fingerprint: _Optional[str] = ...) -> None: ...

class Stream(_message.Message):
    __slots__ = ("index", "kind", "codec", "profile", "language", "title", "default", "forced", "attached_picture", "channels", "channel_layout", "sample_rate", "width", "height", "frame_rate", "bit_rate")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    CODEC_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    FORCED_FIELD_NUMBER: _ClassVar[int]
    ATTACHED_PICTURE_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_LAYOUT_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    FRAME_RATE_FIELD_NUMBER: _ClassVar[int]
    BIT_RATE_FIELD_NUMBER: _ClassVar[int]
    index: int
    kind: StreamKind
    codec: str
    profile: str
    language: str
    title: str
    default: bool
    forced: bool
    attached_picture: bool
    channels: int
    channel_layout: str
    sample_rate: int
    width: int
    height: int
    frame_rate: float
    bit_rate: int
    def __init__(self, index: _Optional[int] = ..., kind: _Optional[_Union[StreamKind, str]] = ..., codec: _Optional[str] = ..., profile: _Optional[str] = ..., language: _Optional[str] = ..., title: _Optional[str] = ..., default: _Optional[bool] = ..., forced: _Optional[bool] = ..., attached_picture: _Optional[bool] = ..., channels: _Optional[int] = ..., channel_layout: _Optional[str] = ..., sample_rate: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., frame_rate: _Optional[float] = ..., bit_rate: _Optional[int] = ...) -> None: ...

class Chapter(_message.Message):
    __slots__ = ("start", "end", "title")
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    TITLE_FIELD_NUMBER: _ClassVar[int]
    start: _duration_pb2.Duration
    end: _duration_pb2.Duration
    title: str
    def __init__(self, start: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., end: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., title: _Optional[str] = ...) -> None: ...

class HealthReport(_message.Message):
    __slots__ = ("error_count", "messages", "first_error_at", "verify_time")
    ERROR_COUNT_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    FIRST_ERROR_AT_FIELD_NUMBER: _ClassVar[int]
    VERIFY_TIME_FIELD_NUMBER: _ClassVar[int]
    error_count: int
    messages: _containers.RepeatedScalarFieldContainer[str]
    first_error_at: _duration_pb2.Duration
    verify_time: _timestamp_pb2.Timestamp
    def __init__(self, error_count: _Optional[int] = ..., messages: _Optional[_Iterable[str]] = ..., first_error_at: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., verify_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListVideosRequest(_message.Message):
    __slots__ = ("path_prefix", "page_size", "page_token", "video_codec", "min_duration", "max_duration", "container", "audio_codec", "min_width", "max_width", "min_height", "max_height", "rotation", "hdr", "truncated", "variable_frame_rate", "order_by", "health", "fingerprint", "library")
    PATH_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    VIDEO_CODEC_FIELD_NUMBER: _ClassVar[int]
    MIN_DURATION_FIELD_NUMBER: _ClassVar[int]
    MAX_DURATION_FIELD_NUMBER: _ClassVar[int]
    CONTAINER_FIELD_NUMBER: _ClassVar[int]
    AUDIO_CODEC_FIELD_NUMBER: _ClassVar[int]
    MIN_WIDTH_FIELD_NUMBER: _ClassVar[int]
    MAX_WIDTH_FIELD_NUMBER: _ClassVar[int]
    MIN_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    MAX_HEIGHT_FIELD_NUMBER: _ClassVar[int]
    ROTATION_FIELD_NUMBER: _ClassVar[int]
    HDR_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    VARIABLE_FRAME_RATE_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    path_prefix: str
    page_size: int
    page_token: str
    video_codec: str
    min_duration: _duration_pb2.Duration
    max_duration: _duration_pb2.Duration
    container: str
    audio_codec: str
    min_width: int
    max_width: int
    min_height: int
    max_height: int
    rotation: int
    hdr: HdrKind
    truncated: bool
    variable_frame_rate: bool
    order_by: str
    health: Health
    fingerprint: str
    library: str
    def __init__(self, path_prefix: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., video_codec: _Optional[str] = ..., min_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., max_duration: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., container: _Optional[str] = ..., audio_codec: _Optional[str] = ..., min_width: _Optional[int] = ..., max_width: _Optional[int] = ..., min_height: _Optional[int] = ..., max_height: _Optional[int] = ..., rotation: _Optional[int] = ..., hdr: _Optional[_Union[HdrKind, str]] = ..., truncated: _Optional[bool] = ..., variable_frame_rate: _Optional[bool] = ..., order_by: _Optional[str] = ..., health: _Optional[_Union[Health, str]] = ..., fingerprint: _Optional[str] = ..., library: _Optional[str] = ...) -> None: ...

class ListVideosResponse(_message.Message):
    __slots__ = ("videos", "next_page_token", "library_sequence")
    VIDEOS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    LIBRARY_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    videos: _containers.RepeatedCompositeFieldContainer[Video]
    next_page_token: str
    library_sequence: int
    def __init__(self, videos: _Optional[_Iterable[_Union[Video, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., library_sequence: _Optional[int] = ...) -> None: ...

class GetVideoRequest(_message.Message):
    __slots__ = ("video_id", "path")
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    video_id: str
    path: str
    def __init__(self, video_id: _Optional[str] = ..., path: _Optional[str] = ...) -> None: ...

class ListDuplicatesRequest(_message.Message):
    __slots__ = ("path_prefix", "page_size", "page_token", "confirm")
    PATH_PREFIX_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CONFIRM_FIELD_NUMBER: _ClassVar[int]
    path_prefix: str
    page_size: int
    page_token: str
    confirm: bool
    def __init__(self, path_prefix: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., confirm: _Optional[bool] = ...) -> None: ...

class DuplicateFile(_message.Message):
    __slots__ = ("video_id", "path", "size_bytes", "content_hash", "error")
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    CONTENT_HASH_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    video_id: str
    path: str
    size_bytes: int
    content_hash: str
    error: str
    def __init__(self, video_id: _Optional[str] = ..., path: _Optional[str] = ..., size_bytes: _Optional[int] = ..., content_hash: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class DuplicateGroup(_message.Message):
    __slots__ = ("fingerprint", "size_bytes", "files", "file_count", "confirmed")
    FINGERPRINT_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    FILE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CONFIRMED_FIELD_NUMBER: _ClassVar[int]
    fingerprint: str
    size_bytes: int
    files: _containers.RepeatedCompositeFieldContainer[DuplicateFile]
    file_count: int
    confirmed: bool
    def __init__(self, fingerprint: _Optional[str] = ..., size_bytes: _Optional[int] = ..., files: _Optional[_Iterable[_Union[DuplicateFile, _Mapping]]] = ..., file_count: _Optional[int] = ..., confirmed: _Optional[bool] = ...) -> None: ...

class ListDuplicatesResponse(_message.Message):
    __slots__ = ("groups", "next_page_token")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[DuplicateGroup]
    next_page_token: str
    def __init__(self, groups: _Optional[_Iterable[_Union[DuplicateGroup, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class Library(_message.Message):
    __slots__ = ("name", "root", "recursive", "follow_symlinks", "watch_mode", "poll_interval", "quiet_window", "rescan_interval", "full_rescan_every", "removal_limit", "status", "uid", "create_time", "extensions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ROOT_FIELD_NUMBER: _ClassVar[int]
    RECURSIVE_FIELD_NUMBER: _ClassVar[int]
    FOLLOW_SYMLINKS_FIELD_NUMBER: _ClassVar[int]
    WATCH_MODE_FIELD_NUMBER: _ClassVar[int]
    POLL_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    QUIET_WINDOW_FIELD_NUMBER: _ClassVar[int]
    RESCAN_INTERVAL_FIELD_NUMBER: _ClassVar[int]
    FULL_RESCAN_EVERY_FIELD_NUMBER: _ClassVar[int]
    REMOVAL_LIMIT_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    UID_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    EXTENSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    root: str
    recursive: bool
    follow_symlinks: bool
    watch_mode: WatchMode
    poll_interval: _duration_pb2.Duration
    quiet_window: _duration_pb2.Duration
    rescan_interval: _duration_pb2.Duration
    full_rescan_every: int
    removal_limit: float
    status: LibraryStatus
    uid: str
    create_time: _timestamp_pb2.Timestamp
    extensions: str
    def __init__(self, name: _Optional[str] = ..., root: _Optional[str] = ..., recursive: _Optional[bool] = ..., follow_symlinks: _Optional[bool] = ..., watch_mode: _Optional[_Union[WatchMode, str]] = ..., poll_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., quiet_window: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., rescan_interval: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., full_rescan_every: _Optional[int] = ..., removal_limit: _Optional[float] = ..., status: _Optional[_Union[LibraryStatus, _Mapping]] = ..., uid: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., extensions: _Optional[str] = ...) -> None: ...

class LibraryStatus(_message.Message):
    __slots__ = ("state", "reason", "since", "watching", "last_job_id", "last_scan_end_time", "video_count", "total_size_bytes", "last_sequence", "node", "next_rescan_time", "marker", "scheduled_runs")
    STATE_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    WATCHING_FIELD_NUMBER: _ClassVar[int]
    LAST_JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LAST_SCAN_END_TIME_FIELD_NUMBER: _ClassVar[int]
    VIDEO_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    NEXT_RESCAN_TIME_FIELD_NUMBER: _ClassVar[int]
    MARKER_FIELD_NUMBER: _ClassVar[int]
    SCHEDULED_RUNS_FIELD_NUMBER: _ClassVar[int]
    state: LibraryState
    reason: str
    since: _timestamp_pb2.Timestamp
    watching: WatchMode
    last_job_id: str
    last_scan_end_time: _timestamp_pb2.Timestamp
    video_count: int
    total_size_bytes: int
    last_sequence: int
    node: str
    next_rescan_time: _timestamp_pb2.Timestamp
    marker: bool
    scheduled_runs: int
    def __init__(self, state: _Optional[_Union[LibraryState, str]] = ..., reason: _Optional[str] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., watching: _Optional[_Union[WatchMode, str]] = ..., last_job_id: _Optional[str] = ..., last_scan_end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., video_count: _Optional[int] = ..., total_size_bytes: _Optional[int] = ..., last_sequence: _Optional[int] = ..., node: _Optional[str] = ..., next_rescan_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., marker: _Optional[bool] = ..., scheduled_runs: _Optional[int] = ...) -> None: ...

class CreateLibraryRequest(_message.Message):
    __slots__ = ("library_id", "library")
    LIBRARY_ID_FIELD_NUMBER: _ClassVar[int]
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    library_id: str
    library: Library
    def __init__(self, library_id: _Optional[str] = ..., library: _Optional[_Union[Library, _Mapping]] = ...) -> None: ...

class GetLibraryRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class ListLibrariesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListLibrariesResponse(_message.Message):
    __slots__ = ("libraries", "next_page_token")
    LIBRARIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    libraries: _containers.RepeatedCompositeFieldContainer[Library]
    next_page_token: str
    def __init__(self, libraries: _Optional[_Iterable[_Union[Library, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateLibraryRequest(_message.Message):
    __slots__ = ("library", "update_mask")
    LIBRARY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    library: Library
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, library: _Optional[_Union[Library, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class DeleteLibraryRequest(_message.Message):
    __slots__ = ("name", "drop_videos")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DROP_VIDEOS_FIELD_NUMBER: _ClassVar[int]
    name: str
    drop_videos: bool
    def __init__(self, name: _Optional[str] = ..., drop_videos: _Optional[bool] = ...) -> None: ...

class WatchLibraryRequest(_message.Message):
    __slots__ = ("name", "after_sequence", "library_uid")
    NAME_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LIBRARY_UID_FIELD_NUMBER: _ClassVar[int]
    name: str
    after_sequence: int
    library_uid: str
    def __init__(self, name: _Optional[str] = ..., after_sequence: _Optional[int] = ..., library_uid: _Optional[str] = ...) -> None: ...

class LibraryChange(_message.Message):
    __slots__ = ("sequence", "kind", "time", "video_id", "path", "old_path", "changed_fields", "video", "status", "job_id", "library_uid")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    VIDEO_ID_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    OLD_PATH_FIELD_NUMBER: _ClassVar[int]
    CHANGED_FIELDS_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    JOB_ID_FIELD_NUMBER: _ClassVar[int]
    LIBRARY_UID_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    kind: ChangeKind
    time: _timestamp_pb2.Timestamp
    video_id: str
    path: str
    old_path: str
    changed_fields: _containers.RepeatedScalarFieldContainer[str]
    video: Video
    status: LibraryStatus
    job_id: str
    library_uid: str
    def __init__(self, sequence: _Optional[int] = ..., kind: _Optional[_Union[ChangeKind, str]] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., video_id: _Optional[str] = ..., path: _Optional[str] = ..., old_path: _Optional[str] = ..., changed_fields: _Optional[_Iterable[str]] = ..., video: _Optional[_Union[Video, _Mapping]] = ..., status: _Optional[_Union[LibraryStatus, _Mapping]] = ..., job_id: _Optional[str] = ..., library_uid: _Optional[str] = ...) -> None: ...
