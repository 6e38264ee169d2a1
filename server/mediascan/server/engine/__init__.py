"""The job engine: admission, the dispatcher and runner, the recorder, recovery and drain, each
in its own module, behind `JobEngine` (the `AsyncJobQueue` the service uses)."""

from __future__ import annotations

from .admission import SubmitOutcome
from .engine import MAX_PAGE_BYTES, AsyncJobQueue, JobEngine

__all__ = ["MAX_PAGE_BYTES", "AsyncJobQueue", "JobEngine", "SubmitOutcome"]
