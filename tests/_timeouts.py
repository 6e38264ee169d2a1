"""A pytest plugin (loaded by conftest.py): a test that outlives its pytest-timeout fails with a
few lines saying which test, after how long, and what it was waiting for, instead of the stacks
of every thread in the process (a server under test has dozens).

For a coroutine test, "what it was waiting for" is the chain of awaits of each task on the loop
that was started from a test file or a helper next to it (test -> helper -> ... -> the innermost
coroutine or future); for a plain test, the innermost lines of the test files on the main
thread's stack. Off the main thread (no SIGALRM there) pytest-timeout's own handling applies.
"""

from __future__ import annotations

import asyncio
import signal
import threading
import traceback
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

TESTS = Path(__file__).resolve().parent
#: At most this many tasks and frames are named.
MOST = 6


@pytest.hookimpl(tryfirst=True)
def pytest_timeout_set_timer(item: pytest.Item, settings: Any) -> bool | None:
    if settings.method != "signal" or threading.current_thread() is not threading.main_thread():
        return None  # pytest-timeout's own timer
    seconds = settings.timeout

    def expired(signum: int, frame: FrameType | None) -> None:
        __tracebackhide__ = True
        pytest.fail(reason(item, seconds, frame), pytrace=False)

    def cancel() -> None:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, signal.SIG_DFL)

    item.cancel_timeout = cancel  # type: ignore[attr-defined]  # pytest-timeout's attribute
    signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    return True


def reason(item: pytest.Item, seconds: float, frame: FrameType | None) -> str:
    """The failure message: the test, its limit, what it awaited."""
    ours = (str(TESTS), str(item.path.parent))
    waits = awaited_by_tasks(ours) or blocked_at(frame, ours)
    lines = [f"Timeout: {item.nodeid} did not finish in {seconds:g} s; it was waiting in:"]
    lines += [f"  {w}" for w in waits[:MOST]] or ["  (nothing of the tests' own found)"]
    return "\n".join(lines)


def awaited_by_tasks(ours: tuple[str, ...]) -> list[str]:
    """One line per task of the running loop that runs the tests' code: its await chain."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return []
    found = []
    for task in asyncio.all_tasks(loop):
        chain = await_chain(task.get_coro())
        if any(_ours(filename, ours) for _, filename, _ in chain):
            found.append(" -> ".join(_where(*link) for link in chain))
    return sorted(found)


def await_chain(coro: Any) -> list[tuple[str, str, int]]:
    """(name, file, line) of each coroutine in `coro`'s await chain, outermost first; the last
    entry is the awaitable it is suspended on when that is not a coroutine (a future, an
    event's waiter)."""
    chain: list[tuple[str, str, int]] = []
    while coro is not None and len(chain) < 40:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "ag_frame", None)
        if frame is None:
            chain.append((type(coro).__name__, "", 0))
            break
        chain.append((coro.__qualname__, frame.f_code.co_filename, frame.f_lineno))
        coro = getattr(coro, "cr_await", None) or getattr(coro, "ag_await", None)
    return chain


def blocked_at(frame: FrameType | None, ours: tuple[str, ...]) -> list[str]:
    """The innermost frames of the tests' own files on this stack, innermost last."""
    if frame is None:
        return []
    stack = traceback.extract_stack(frame)
    own = [s for s in stack if _ours(s.filename, ours)]
    innermost = stack[-1] if stack else None
    lines = [_where(s.name, s.filename, s.lineno or 0) for s in own[-(MOST - 1) :]]
    if innermost is not None and innermost not in own:
        lines.append("blocked in " + _where(innermost.name, innermost.filename, innermost.lineno))
    return lines


def _ours(filename: str, ours: tuple[str, ...]) -> bool:
    """A file of the tests (this plugin aside)."""
    return filename.startswith(ours) and not filename.endswith("_timeouts.py")


def _where(name: str, filename: str, line: int | None) -> str:
    if not filename:
        return name
    path = Path(filename)
    shown = path.relative_to(TESTS.parent) if path.is_relative_to(TESTS.parent) else path.name
    return f"{name} ({shown}:{line})"
